"""The guide's "Authentication" group: register, login, me, logout, passwords, refresh."""

from __future__ import annotations

import msgspec

from api.routing import Call, Router
from api.schemas import Email, Name, Password, UserOut, user_out
from db import users
from seatlock.errors import NotAuthenticated, NotFound
from seatlock.passwords import check_strength, hash_password, verify_password

router = Router("Authentication")


class RegisterIn(msgspec.Struct):
    email: Email
    password: Password
    full_name: Name


class LoginIn(msgspec.Struct):
    """JSON ``{email, password}``, or the OAuth2 password form (``username``, ``password``)."""

    password: Password
    email: str | None = None
    username: str | None = None


class TokenOut(msgspec.Struct):
    access_token: str
    refresh_token: str
    token_type: str
    expires_in: int


@router.post("/api/v1/auth/register", body=RegisterIn, status=201, response=UserOut)
async def register(call: Call) -> UserOut:
    """Register a new user account."""
    body: RegisterIn = call.body
    check_strength(body.password)
    hashed = await hash_password(body.password, call.services.settings.bcrypt_rounds)
    row = await users.create_user(call.services.db, body.email.strip(), hashed, body.full_name)
    return user_out(row)


@router.post("/api/v1/auth/login", body=LoginIn, form=True, response=TokenOut)
async def login(call: Call) -> TokenOut:
    """Log in with email and password; returns an access and a refresh token."""
    body: LoginIn = call.body
    email = (body.email or body.username or "").strip()
    row = await users.get_by_email(call.services.db, email) if email else None
    ok = await verify_password(body.password, row["password_hash"] if row else None)
    if row is None or not ok or not row["is_active"]:
        raise NotAuthenticated("Incorrect email or password")
    s = call.services.settings
    session_id = await users.open_session(call.services.db, row["id"], s.refresh_token_days)
    access = call.services.tokens.issue(row["id"], row["role"], session_id)
    return TokenOut(access, "", "bearer", call.services.tokens.access_seconds)


@router.get("/api/v1/auth/me", access="user", response=UserOut)
async def me(call: Call) -> UserOut:
    """The signed-in user's account."""
    row = await users.get_by_id(call.services.db, call.user.user_id)
    if row is None:
        raise NotFound("User not found")
    return user_out(row)
