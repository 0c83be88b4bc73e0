"""Request and response shapes shared by several route modules."""

from __future__ import annotations

from datetime import datetime
from typing import Annotated, Any

import msgspec

# Control characters and whitespace, spelled out so that a class of them means the same in
# Python's re (msgspec checks it) and in ECMAScript's (the published JSON Schema, what clients
# and schemathesis check against): their \s differ (Python's also matches \x1c-\x1f and \x85,
# ECMAScript's also \ufeff).
_BLANKS = r"\x00-\x20\x7f-\xa0\u1680\u2000-\u200a\u2028\u2029\u202f\u205f\u3000\ufeff"
# Characters that show nothing (format characters: soft hyphen, zero-width spaces and joiners,
# direction marks and overrides, word joiners): in an address they make a second account that
# looks like another's.
_INVISIBLE = r"\xad\u180e\u200b-\u200f\u202a-\u202e\u2060-\u2064\u2066-\u206f"
_ADDRESS_CHAR = rf"[^@{_BLANKS}{_INVISIBLE}]"  # of an email address
_ADDRESS = rf"{_ADDRESS_CHAR}+@{_ADDRESS_CHAR}+\.{_ADDRESS_CHAR}+"
Email = Annotated[str, msgspec.Meta(pattern=rf"^{_ADDRESS}$", max_length=254)]
# A picture's or a trailer's address: http(s), no blank or control character anywhere.
Url = Annotated[str, msgspec.Meta(max_length=2000, pattern=rf"^https?://[^{_BLANKS}]+$")]
# What Python's str.strip() removes (str.isspace), spelled out for a published pattern that
# describes a handler which strips text first.
STRIPPED = r"\t-\r\x1c-\x20\x85\xa0\u1680\u2000-\u200a\u2028\u2029\u202f\u205f\u3000"
# A name or title: something to show, not only blanks, and no NUL (PostgreSQL text cannot hold one).
NAMED = rf"^[^\x00]*[^\x00{STRIPPED}][^\x00]*$"
# As typed into a sign-in form: surrounding ASCII blanks allowed (the server trims them).
TypedEmail = Annotated[
    str, msgspec.Meta(pattern=rf"^[\t\n\v\f\r ]*{_ADDRESS}[\t\n\v\f\r ]*$", max_length=254)
]
Password = Annotated[str, msgspec.Meta(min_length=1, max_length=256)]
# A password being set: seatlock/accounts/passwords.py check_strength is the rule (8 characters to
# 72 bytes, what bcrypt reads; not all letters nor all digits) and its messages; the schema states
# the lengths, the decoder leaves them to it.
NewPassword = Annotated[
    str,
    msgspec.Meta(
        extra_json_schema={
            "minLength": 8,
            "maxLength": 72,
            "description": "8 characters to 72 bytes (UTF-8), not all letters nor all digits",
        }
    ),
]
Name = Annotated[str, msgspec.Meta(min_length=1, max_length=200)]


class UserOut(msgspec.Struct):
    id: int
    email: str
    full_name: str
    role: str
    is_active: bool
    created_at: datetime
    phone: str | None = None
    bio: str | None = None
    profile_picture_url: str | None = None
    preferences: dict[str, Any] = {}


def user_out(row: Any) -> UserOut:
    return UserOut(
        id=row["id"],
        email=row["email"],
        full_name=row["full_name"],
        role=row["role"],
        is_active=row["is_active"],
        created_at=row["created_at"],
        phone=row["phone"],
        bio=row["bio"],
        profile_picture_url=row["profile_picture_url"],
        preferences=row["preferences"],
    )


class Message(msgspec.Struct):
    message: str


class Page(msgspec.Struct):
    """Pagination for every list: ``skip`` rows, then at most ``limit`` (max 200)."""

    skip: Annotated[int, msgspec.Meta(ge=0, le=2**31 - 1)] = 0
    limit: Annotated[int, msgspec.Meta(ge=1, le=200)] = 50
