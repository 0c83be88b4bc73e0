"""JWT access tokens: HS256 pinned here (never taken from the token header), short-lived.

Refresh and reset tokens are opaque random strings instead; only their digests are stored.
"""

from __future__ import annotations

import hashlib
import os
import re
import secrets
import time
from collections import OrderedDict
from dataclasses import dataclass

import jwt

from seatlock.errors import NotAuthenticated
from seatlock.settings import Settings

ALGORITHM = "HS256"
REQUIRED_CLAIMS = ["exp", "iat", "sub", "sid"]
VERIFIED_TOKENS = 10_000  # per process; a token string with its claims is well under 1 kB
MAX_USER_ID = 2**63 - 1  # a PostgreSQL bigint: a larger id would fail the query, not the token
SESSION_ID = re.compile(r"[A-Za-z0-9_-]{1,64}")  # what secrets.token_urlsafe gives


@dataclass(frozen=True, slots=True)
class Principal:
    """Who a valid access token speaks for."""

    user_id: int
    role: str
    session_id: str
    token_id: str
    expires_at: int

    @property
    def is_admin(self) -> bool:
        return self.role == "admin"


class TokenCodec:
    def __init__(self, secret: str, access_minutes: int) -> None:
        if len(secret) < 32:
            raise ValueError("the JWT secret must be at least 32 characters")
        self._secret = secret
        self.access_seconds = access_minutes * 60
        # Raw token -> its claims, least recently used first. A token's signature and claims
        # never change, so it is verified once; its expiry is checked on every use.
        self._verified: OrderedDict[str, Principal] = OrderedDict()
        self.max_verified = VERIFIED_TOKENS

    def issue(self, user_id: int, role: str, session_id: str, now: float | None = None) -> str:
        issued = int(now if now is not None else time.time())
        claims = {
            "sub": str(user_id),
            "role": role,
            "sid": session_id,
            "jti": secrets.token_urlsafe(12),
            "iat": issued,
            "exp": issued + self.access_seconds,
            "typ": "access",
        }
        return jwt.encode(claims, self._secret, algorithm=ALGORITHM)

    def decode(self, token: str, now: float | None = None) -> Principal:
        principal = self._verified.get(token)
        if principal is None:
            principal = self._verify(token)
            self._verified[token] = principal
            if len(self._verified) > self.max_verified:
                self._verified.popitem(last=False)
        else:
            self._verified.move_to_end(token)
        if principal.expires_at <= (time.time() if now is None else now):
            del self._verified[token]
            raise NotAuthenticated("Token has expired")
        return principal

    def _verify(self, token: str) -> Principal:
        try:
            claims = jwt.decode(
                token,
                self._secret,
                algorithms=[ALGORITHM],
                options={"require": REQUIRED_CLAIMS},
            )
            if claims.get("typ") != "access":
                raise NotAuthenticated("Invalid token type")
            return Principal(
                user_id=user_id_of(claims["sub"]),
                role=str(claims.get("role", "user")),
                session_id=session_id_of(claims["sid"]),
                token_id=str(claims.get("jti", "")),
                expires_at=int(claims["exp"]),
            )
        except jwt.ExpiredSignatureError:
            raise NotAuthenticated("Token has expired") from None
        except (jwt.InvalidTokenError, ValueError, TypeError):
            raise NotAuthenticated("Could not validate credentials") from None


def user_id_of(sub: object) -> int:
    """The user id a ``sub`` claim names: decimal digits (as ``issue`` writes it) of an id in
    a bigint. Anything else (a float, a bool, 2**70, a negative, other digits) is not ours, even
    correctly signed (a leaked or reused secret): ValueError, a 401, never a failed query."""
    if not isinstance(sub, str) or not sub.isascii() or not sub.isdigit() or len(sub) > 19:
        raise ValueError("sub is not a user id")
    user_id = int(sub)
    if user_id > MAX_USER_ID:
        raise ValueError("sub is not a user id")
    return user_id


def session_id_of(sid: object) -> str:
    """The session a ``sid`` claim names (a URL-safe token); ValueError for anything else, so
    no odd text (a NUL, megabytes) reaches the session lookup."""
    if not isinstance(sid, str) or SESSION_ID.fullmatch(sid) is None:
        raise ValueError("sid is not a session id")
    return sid


def digest(token: str) -> str:
    """How opaque tokens (refresh, password reset) are stored: a leaked table holds no tokens."""
    return hashlib.sha256(token.encode()).hexdigest()


def load_or_create_secret(settings: Settings) -> str:
    """The configured secret, or one generated once and kept in the data directory.

    Every worker process of one server reads the same file, so their tokens agree.
    """
    if settings.jwt_secret:
        return settings.jwt_secret
    path = settings.data_dir / "jwt_secret"
    path.parent.mkdir(parents=True, exist_ok=True)
    try:
        fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
    except FileExistsError:
        return path.read_text().strip()
    with os.fdopen(fd, "w") as f:
        f.write(secrets.token_urlsafe(48))
    return path.read_text().strip()
