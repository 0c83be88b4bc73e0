"""The one spelling of an email address that uniqueness and lookups compare.

Look-alike characters (full-width letters, ligatures, compatibility forms) would otherwise make
a full-width spelling of ``admin@example.com`` a second account beside it: every address is
brought to Unicode NFKC before it is stored or looked up. Case stays as typed; PostgreSQL compares
``lower(email)`` on both sides (the unique index ``users_email_key``).
"""

from __future__ import annotations

import re
import unicodedata

from seatlock.errors import ValidationFailed

SHAPE = re.compile(r"[^@\s\x00]+@[^@\s\x00]+\.[^@\s\x00]+")


def normalise(email: str) -> str:
    """NFKC of the trimmed address (case is left to ``lower()`` where addresses are compared)."""
    return unicodedata.normalize("NFKC", email.strip())


def canonical(email: str) -> str:
    """The address as stored; 422 when NFKC turns it into something that is not an address
    (a full-width at sign, U+FF20, becomes a second ``@``)."""
    normal = normalise(email)
    if SHAPE.fullmatch(normal) is None:
        raise ValidationFailed("email is not a valid address")
    return normal


def key(email: str) -> str:
    """The spelling per-account counters are kept under (NFKC, then case-folded)."""
    return normalise(email).casefold()
