"""The refresh grace window: a just-spent refresh token, presented again, gets the same pair.

Two tabs (or a retried request) often submit one refresh token at the same moment. Without a
grace window the second submission looks like a stolen copy and revokes the session, the
winner's new tokens included. The pair a token was rotated to is kept in Redis for
``refresh_grace_seconds`` under the spent token's digest, sealed with a key stream derived from
the spent token itself: only a holder of that token can read it, and a copy of Redis holds no
usable token. After the window a replay revokes the session as before.
"""

from __future__ import annotations

import hashlib

import msgspec
from redis.asyncio import Redis
from redis.asyncio.cluster import RedisCluster

from seatlock import keys
from seatlock.accounts.tokens import digest

DOMAIN = b"seatlock refresh grace\x00"  # keeps the key stream apart from the stored digest


async def keep(
    redis: Redis | RedisCluster, spent: str, access: str, refresh: str, seconds: int
) -> None:
    """Keep the pair ``spent`` was rotated to for ``seconds``."""
    sealed = _seal(spent, msgspec.json.encode([access, refresh]))
    await redis.set(keys.refresh_grace(digest(spent)), sealed, ex=seconds)


async def recall(redis: Redis | RedisCluster, spent: str) -> tuple[str, str] | None:
    """The pair ``spent`` was rotated to, while its grace window lasts."""
    sealed = await redis.get(keys.refresh_grace(digest(spent)))
    if not isinstance(sealed, bytes):
        return None
    try:
        access, refresh = msgspec.json.decode(_seal(spent, sealed), type=tuple[str, str])
    except msgspec.DecodeError:
        return None
    return access, refresh


def _seal(token: str, data: bytes) -> bytes:
    # XOR with SHAKE-256 of the token: a one-time pad, as each spent token seals one pair.
    stream = hashlib.shake_256(DOMAIN + token.encode()).digest(len(data))
    return bytes(a ^ b for a, b in zip(data, stream, strict=True))
