"""The guide's "Authentication" group: register, login, me, logout, passwords, refresh."""

from __future__ import annotations

import contextlib
import logging
from collections.abc import AsyncIterator
from typing import Annotated, Any

import msgspec
from redis.exceptions import RedisError
from starlette.background import BackgroundTask

from api.auth import (
    bearer_token,
    client_address,
    principal_from_token,
    remember_session,
    remember_sessions,
    session_opened,
)
from api.rendering import JSON
from api.routing import Call, Router
from api.schemas import (
    STRIPPED,
    Message,
    NewPassword,
    Password,
    TypedEmail,
    UserOut,
    user_out,
)
from api.validation import problem
from db import users
from seatlock.accounts import grace, throttle
from seatlock.accounts.mail import Mail, MailNotSent
from seatlock.errors import (
    Conflict,
    InvalidInput,
    NotAuthenticated,
    NotFound,
    RequestInvalid,
    ValidationFailed,
)
from seatlock.services.container import Services

logger = logging.getLogger(__name__)
router = Router("Authentication")

Email = TypedEmail  # surrounding blanks allowed (and trimmed)
Text = Annotated[str, msgspec.Meta(pattern=r"^[^\x00]*$", max_length=254)]
FullName = Annotated[str, msgspec.Meta(pattern=r"^[^\x00]*$", min_length=1, max_length=200)]
OpaqueToken = Annotated[str, msgspec.Meta(min_length=1, max_length=200)]

INVALID_LOGIN = "Incorrect email or password"
INVALID_REFRESH = "Invalid or expired refresh token"
FORGOT_ANSWER = "If that email is registered, a password reset link has been sent"


class RegisterIn(msgspec.Struct):
    email: Email
    password: NewPassword
    full_name: FullName


class LoginIn(msgspec.Struct):
    """JSON ``{email, password}``, or the OAuth2 password form (``username``, ``password``)."""

    password: Password
    email: Text | None = None
    username: Text | None = None


def _named_by(field: str) -> dict[str, Any]:
    """``field`` has something besides what the handler strips."""
    pattern = rf"[^{STRIPPED}]"
    return {"required": [field], "properties": {field: {"type": "string", "pattern": pattern}}}


# The email or the username names the account (a body with neither is refused, 422).
LoginBody = Annotated[
    LoginIn, msgspec.Meta(extra_json_schema={"anyOf": [_named_by("email"), _named_by("username")]})
]


class TokenOut(msgspec.Struct):
    access_token: str
    refresh_token: str
    token_type: str
    expires_in: int


class RefreshOut(msgspec.Struct, omit_defaults=True):
    """A refresh's answer: with a refresh token in the body, a new pair (TokenOut); with none,
    a new access token for the bearer's session, and no refresh token."""

    access_token: str
    token_type: str
    expires_in: int
    refresh_token: str | None = None


class ChangePasswordIn(msgspec.Struct):
    current_password: Password
    new_password: NewPassword


class RefreshIn(msgspec.Struct):
    refresh_token: OpaqueToken


class ForgotPasswordIn(msgspec.Struct):
    email: Email


class ResetPasswordIn(msgspec.Struct):
    token: OpaqueToken
    new_password: NewPassword


@router.post("/api/v1/auth/register", errors=(409,), body=RegisterIn, status=201, response=UserOut)
async def register(call: Call) -> UserOut:
    """Register a new user account."""
    body: RegisterIn = call.body
    full_name = body.full_name.strip()
    if not full_name:
        raise ValidationFailed("full_name must not be blank")
    services, email = call.services, body.email.strip()
    # Before the hash: a taken email is answered at once rather than after ~0.25 s of the
    # hashing lane that sign-ins share (create_user still decides a race for the same email).
    if await users.email_registered(services.db, email):
        raise Conflict(users.EMAIL_TAKEN)
    hashed = await services.passwords.hash(body.password)
    row = await users.create_user(services.db, email, hashed, full_name)
    return user_out(row)


@router.post("/api/v1/auth/login", errors=(401, 429), body=LoginBody, form=True, response=TokenOut)
async def login(call: Call) -> TokenOut:
    """Log in with email and password; returns an access and a refresh token."""
    body: LoginIn = call.body
    email = (body.email or body.username or "").strip()
    if not email:  # FastAPI's answer to the password form without its username
        raise RequestInvalid([problem("missing", ("body", "email"), "Field required", None)])
    services = call.services
    address = client_address(call.request, services.settings.trusted_networks)
    async with _throttled(services, email, address):
        row = await users.get_by_email(services.db, email)
        hashed = row["password_hash"] if row else None
        ok = await services.passwords.verify(body.password, hashed)
    opened = None
    if row is not None and hashed is not None and ok and row["is_active"]:
        opened = await users.start_session(
            services.db, row["id"], hashed, services.settings.refresh_token_days
        )
    if opened is None:
        await throttle.login_failed(services.redis, services.settings, email, address)
        raise NotAuthenticated(INVALID_LOGIN)
    await throttle.login_succeeded(services.redis, email, address)
    await session_opened(services, opened[0])
    assert row is not None
    return await _tokens(services, row["id"], row["role"], *opened)


@router.get("/api/v1/auth/me", access="user", response=UserOut)
async def me(call: Call) -> UserOut:
    """The signed-in user's account."""
    row = await users.get_by_id(call.services.db, call.user.user_id)
    if row is None:
        raise NotFound("User not found")
    return user_out(row)


@router.post("/api/v1/auth/logout", access="user", response=Message)
async def logout(call: Call) -> Message:
    """Log out: revoke this session, its access and refresh tokens stop working at once."""
    await users.revoke_session(call.services.db, call.user.session_id)
    await remember_session(call.services, call.user.session_id, False)
    return Message("Successfully logged out")


@router.put("/api/v1/auth/change-password", access="user", body=ChangePasswordIn, response=Message)
async def change_password(call: Call) -> Message:
    """Change the password; every other session of the user is signed out."""
    body: ChangePasswordIn = call.body
    services, principal = call.services, call.user
    found = await users.get_credentials(services.db, principal.user_id)
    if found is None:
        raise NotAuthenticated("User not found")
    email, current = found
    # Wrong current passwords count as failed sign-ins of the account from this address (the
    # login's limits, 429 past them): a stolen access token is no unlimited password guesser.
    address = client_address(call.request, services.settings.trusted_networks)
    if not await _password_checked(services, email, address, body.current_password, current):
        raise InvalidInput("Incorrect current password")
    if body.new_password == body.current_password:
        raise InvalidInput("New password must differ from the current one")
    new_hash = await services.passwords.hash(body.new_password)
    revoked = await users.change_password(
        services.db, principal.user_id, current, new_hash, principal.session_id
    )
    await remember_sessions(services, revoked, False)
    return Message("Password changed successfully")


@router.post(
    "/api/v1/auth/refresh-token",
    errors=(401,),
    body=RefreshIn,
    optional_body=True,
    response=RefreshOut,
)
async def refresh_token(call: Call) -> TokenOut | RefreshOut:
    """Trade a refresh token for a new access and refresh token (the old one is spent); with
    no body, a live bearer access token for a new access token of its session.

    Public on purpose: with a body, the bearer header, if sent, usually carries an expired
    access token. The same refresh token sent again within a few seconds gets the same pair
    (two tabs refreshing at once); sent again later, it revokes the session.
    """
    if call.body is None:
        return await _renew_access(call)
    services, spent = call.services, call.body.refresh_token
    issued: list[TokenOut] = []

    async def keep(done: users.Refreshed) -> None:
        assert done.refresh_token is not None
        pair = await _tokens(services, done.user_id, done.role, done.session_id, done.refresh_token)
        issued.append(pair)
        await _keep_for_grace(services, spent, pair)

    settings = services.settings
    done = await users.rotate_refresh_token(
        services.db, spent, settings.refresh_token_days, settings.refresh_grace_seconds, keep
    )
    if done is None:
        raise NotAuthenticated(INVALID_REFRESH)
    if done.refresh_token is not None:
        return issued[0]
    if done.in_grace and (pair := await grace.recall(services.redis, spent)) is not None:
        return TokenOut(*pair, "bearer", services.tokens.access_seconds)
    if done.in_grace:  # the kept pair is lost (Redis failed or was flushed): reuse after all
        await users.revoke_session(services.db, done.session_id)
    await remember_session(services, done.session_id, False)
    logger.warning("refresh token reuse: session %s revoked", done.session_id)
    raise NotAuthenticated("Refresh token already used; the session has been revoked")


async def _renew_access(call: Call) -> RefreshOut:
    """A new access token for the session of a live bearer token (the origin project's refresh).

    The session must be active (not revoked nor expired: the same check as every route's) and
    its user still active; the role is read again, so a change of role shows in the new token.
    The refresh token of the session is neither needed nor spent.
    """
    token = bearer_token(call.scope["headers"])
    if token is None:
        raise NotAuthenticated("Not authenticated")
    services = call.services
    principal = await principal_from_token(token, services)
    row = await users.get_by_id(services.db, principal.user_id)
    if row is None or not row["is_active"]:
        raise NotAuthenticated("User not found or inactive")
    access = services.tokens.issue(row["id"], row["role"], principal.session_id)
    return RefreshOut(access, "bearer", services.tokens.access_seconds)


async def _keep_for_grace(services: Services, spent: str, pair: TokenOut) -> None:
    seconds = services.settings.refresh_grace_seconds
    if seconds <= 0:
        return
    try:
        await grace.keep(services.redis, spent, pair.access_token, pair.refresh_token, seconds)
    except RedisError as exc:  # the rotation stands; a duplicate then counts as reuse
        logger.warning("refresh grace pair not kept: %r", type(exc).__name__)


@router.post("/api/v1/auth/forgot-password", body=ForgotPasswordIn, response=Message)
async def forgot_password(call: Call) -> JSON:
    """Mail a password reset link; the answer is the same whether or not the email exists."""
    email = call.body.email.strip()
    # The lookup and the mail run after the response is sent, so its timing does not tell
    # whether the account exists either.
    task = BackgroundTask(_send_reset_mail, call.services, email)
    return JSON(Message(FORGOT_ANSWER), background=task)


@router.post("/api/v1/auth/reset-password", body=ResetPasswordIn, response=Message)
async def reset_password(call: Call) -> Message:
    """Set a new password with a mailed reset token (once); every session is signed out."""
    body: ResetPasswordIn = call.body
    services = call.services
    # Before the hash: a made-up token costs a lookup, not ~0.25 s of the hashing lane that
    # sign-ins share (reset_password still decides, once, when two resets race).
    if not await users.reset_token_usable(services.db, body.token):
        raise InvalidInput(users.INVALID_RESET_TOKEN)
    new_hash = await services.passwords.hash(body.new_password)
    revoked = await users.reset_password(services.db, body.token, new_hash)
    await remember_sessions(services, revoked, False)
    return Message("Password has been reset successfully")


@contextlib.asynccontextmanager
async def _throttled(services: Services, email: str, address: str) -> AsyncIterator[None]:
    """A password check of the account from ``address`` under the login's throttle: admitted
    first (429 past its limits); when the body fails before a password was checked (a 503:
    PostgreSQL down, the hashing lane full), its count is taken back, as retrying that is not
    guessing."""
    await throttle.admit_login(services.redis, services.settings, email, address)
    try:
        yield
    except Exception:
        with contextlib.suppress(RedisError):
            await throttle.login_unchecked(services.redis, email, address)
        raise


async def _password_checked(
    services: Services, email: str, address: str, password: str, hashed: str
) -> bool:
    """Whether ``password`` is the account's, under the login's throttle (429 past its limits):
    a failure counts as one of the account from ``address``, a success clears that pair."""
    async with _throttled(services, email, address):
        ok = await services.passwords.verify(password, hashed)
    if ok:
        await throttle.login_succeeded(services.redis, email, address)
    else:
        await throttle.login_failed(services.redis, services.settings, email, address)
    return ok


async def _tokens(
    services: Services, user_id: int, role: str, session_id: str, refresh: str
) -> TokenOut:
    access = services.tokens.issue(user_id, role, session_id)
    return TokenOut(access, refresh, "bearer", services.tokens.access_seconds)


async def _send_reset_mail(services: Services, email: str) -> None:
    try:
        if not await throttle.admit_reset_mail(services.redis, services.settings, email):
            return
        row = await users.get_by_email(services.db, email)
        if row is None or not row["is_active"]:
            return
        s = services.settings
        token = await users.create_password_reset(services.db, row["id"], s.reset_token_minutes)
        mail = _reset_mail(row["email"], token, s.public_url, s.reset_token_minutes)
        await services.mailer.send(mail)
    except MailNotSent:  # the mailer logged why
        pass
    except Exception:
        logger.exception("could not send the password reset mail")


def _reset_mail(to: str, token: str, public_url: str, minutes: int) -> Mail:
    link = f"{public_url.rstrip('/')}/reset-password?token={token}"
    body = (
        "Someone asked to reset the password of your seatlock account.\n\n"
        f"Open {link} within {minutes} minutes, or use this token: {token}\n\n"
        "If it was not you, ignore this mail: your password stays as it is.\n"
    )
    return Mail(to, "Reset your seatlock password", body, kind="password_reset")
