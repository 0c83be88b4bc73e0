"""Every Redis key and channel name seatlock uses, in one place.

Keys of one screening share the hash tag ``{scr:ID}`` so every script touching them runs on one
Redis Cluster slot. Lua scripts never build key names: they receive them in KEYS.
"""

from __future__ import annotations

PREFIX = "sl:"


def session(session_id: str) -> str:
    """Cached state of an auth session: "1" active, "0" revoked."""
    return f"{PREFIX}sess:{session_id}"


def login_failures_account(email: str) -> str:
    return f"{PREFIX}login-fail:acct:{email.lower()}"


def login_failures_address(address: str) -> str:
    return f"{PREFIX}login-fail:ip:{address}"


def rate_limit(name: str) -> str:
    return f"{PREFIX}rate:{name}"
