"""bcrypt hashing, always in a worker thread so the event loop never waits on it."""

from __future__ import annotations

import asyncio

import bcrypt

from seatlock.errors import ValidationFailed

MIN_LENGTH = 8
MAX_BYTES = 72  # bcrypt ignores (or, since bcrypt 5, refuses) anything past 72 bytes

# Valid hashes (one per cost) to compare against when the account does not exist, so the time a
# login takes does not tell whether the email is registered.
_dummy_hashes: dict[int, bytes] = {}


def check_strength(password: str) -> None:
    """Raise ValidationFailed for a password we will not hash."""
    if "\x00" in password:
        raise ValidationFailed("Password must not contain NUL characters")
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


async def verify_password(password: str, hashed: str | None, rounds: int = 12) -> bool:
    """Check a password; with no hash (unknown account) spend the same time and say no."""
    raw = password.encode()
    if len(raw) > MAX_BYTES or b"\x00" in raw:
        return False
    target = hashed.encode() if hashed else await _dummy_hash(rounds)
    ok = await asyncio.to_thread(bcrypt.checkpw, raw, target)
    return ok and hashed is not None


async def _dummy_hash(rounds: int) -> bytes:
    if rounds not in _dummy_hashes:
        salt = bcrypt.gensalt(rounds)
        _dummy_hashes[rounds] = await asyncio.to_thread(bcrypt.hashpw, b"seatlock-dummy", salt)
    return _dummy_hashes[rounds]
