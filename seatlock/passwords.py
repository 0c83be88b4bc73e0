"""bcrypt hashing, always in a worker thread so the event loop never waits on it."""

from __future__ import annotations

import asyncio

import bcrypt

from seatlock.errors import ValidationFailed

MIN_LENGTH = 8
MAX_BYTES = 72  # bcrypt ignores (or, since bcrypt 5, refuses) anything past 72 bytes

# A valid hash to compare against when the account does not exist, so timing does not tell.
_DUMMY_HASH = bcrypt.hashpw(b"seatlock-dummy-password", bcrypt.gensalt(4))


def check_strength(password: str) -> None:
    """Raise ValidationFailed for a password we will not hash."""
    if len(password) < MIN_LENGTH:
        raise ValidationFailed(f"Password must be at least {MIN_LENGTH} characters long")
    if len(password.encode()) > MAX_BYTES:
        raise ValidationFailed(f"Password must be at most {MAX_BYTES} bytes long")
    if password.isdigit() or password.isalpha():
        raise ValidationFailed("Password must mix letters with digits or symbols")


async def hash_password(password: str, rounds: int = 12) -> str:
    check_strength(password)
    salt = bcrypt.gensalt(rounds)
    hashed = await asyncio.to_thread(bcrypt.hashpw, password.encode(), salt)
    return hashed.decode()


async def verify_password(password: str, hashed: str | None) -> bool:
    raw = password.encode()
    if len(raw) > MAX_BYTES:
        return False
    target = hashed.encode() if hashed else _DUMMY_HASH
    ok = await asyncio.to_thread(bcrypt.checkpw, raw, target)
    return ok and hashed is not None
