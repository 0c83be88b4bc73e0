"""The guide's "Users" group: the caller's profile, preferences, picture, search history, and
other users' public profiles. Also serves the uploaded pictures back."""

from __future__ import annotations

import secrets
from collections.abc import AsyncGenerator
from datetime import datetime
from typing import Annotated, Any, Literal
from urllib.parse import unquote, urlsplit

import msgspec
from starlette.datastructures import UploadFile
from starlette.formparsers import MultiPartException, MultiPartParser
from starlette.requests import Request
from starlette.responses import Response

from api.answercache import catalog_changed
from api.auth import remember_session
from api.routing import Call, Router
from api.schemas import STRIPPED, Name, Page, UserOut, user_out
from db import profiles, users
from seatlock.accounts.media import media_type, owner_of, sniff_image
from seatlock.errors import NotFound, PayloadTooLarge, UnsupportedMedia, ValidationFailed
from seatlock.services.container import Services

router = Router("Users")

MEDIA_PREFIX = "/media/profile-pictures/"
MEDIA_DIR = ["media", "profile-pictures"]  # MEDIA_PREFIX's segments (_stored_name)
MAX_DECODES = 8  # percent-decodings of a picture URL's path, at most (_resolved)
MULTIPART_OVERHEAD = 16 * 1024  # boundaries and part headers around the file itself

Phone = Annotated[str, msgspec.Meta(pattern=r"^\+?[0-9][0-9 ()./-]{2,31}$")]
Bio = Annotated[str, msgspec.Meta(max_length=1000)]
Tag = Annotated[str, msgspec.Meta(min_length=1, max_length=50, pattern=r"^[^\x00-\x1f]+$")]
PositiveId = Annotated[int, msgspec.Meta(ge=1, le=2**63 - 1)]
# An absolute http(s) URL with a host (checked by the handler, which strips it first and refuses a
# NUL anywhere). The pattern documents a part of what it accepts: a host of URL characters (one
# that urlsplit would find to have none, or refuse, is left out) and any path without a NUL.
WEB_URL = rf"^[{STRIPPED}]*[Hh][Tt][Tt][Pp][Ss]?://[A-Za-z0-9._~!$&'()*+,;=%-]+([/?#][^\x00]*)?$"
Url = Annotated[
    str, msgspec.Meta(min_length=1, max_length=2048, extra_json_schema={"pattern": WEB_URL})
]
Query = Annotated[str, msgspec.Meta(min_length=1, max_length=200)]


class ProfileIn(msgspec.Struct, forbid_unknown_fields=True):
    """Absent fields stay as they are; ``null`` clears phone or bio."""

    full_name: Name | msgspec.UnsetType = msgspec.UNSET
    phone: Phone | msgspec.UnsetType | None = msgspec.UNSET
    bio: Bio | msgspec.UnsetType | None = msgspec.UNSET


class PreferencesIn(msgspec.Struct, forbid_unknown_fields=True, omit_defaults=True):
    """Replaces the stored preferences as a whole."""

    genres: Annotated[list[Tag], msgspec.Meta(max_length=50)] | None = None
    languages: Annotated[list[Tag], msgspec.Meta(max_length=50)] | None = None
    preferred_cinema_ids: Annotated[list[PositiveId], msgspec.Meta(max_length=50)] | None = None
    seat_type: Literal["standard", "premium", "vip", "wheelchair", "couple"] | None = None
    notifications: bool | None = None


class PictureUrlIn(msgspec.Struct, forbid_unknown_fields=True):
    url: Url


class PictureUpload(msgspec.Struct):
    """multipart/form-data with one field ``file``: a PNG, JPEG, WebP or GIF image."""

    file: bytes


class PublicProfile(msgspec.Struct):
    id: int
    full_name: str
    profile_picture_url: str | None
    created_at: datetime
    review_count: int


class HistoryIn(msgspec.Struct, forbid_unknown_fields=True):
    query: Query


class HistoryEntry(msgspec.Struct):
    id: int
    query: str
    created_at: datetime


def _no_nul(value: Any, field: str) -> Any:
    if isinstance(value, str) and "\x00" in value:
        raise ValidationFailed(f"{field} must not contain NUL characters")
    return value


def _found(row: Any) -> Any:
    if row is None:
        raise NotFound("User not found")
    return row


# Profile ------------------------------------------------------------------------------------


@router.get("/api/v1/users/me", access="user", response=UserOut)
async def get_me(call: Call) -> UserOut:
    """Get Current User Profile."""
    return user_out(_found(await users.get_by_id(call.services.db, call.user.user_id)))


@router.put("/api/v1/users/me", access="user", body=ProfileIn, response=UserOut)
async def update_me(call: Call) -> UserOut:
    """Update User Profile.

    Sets full_name, phone and bio; absent fields stay as they are.
    """
    body: ProfileIn = call.body
    changes = {
        name: _no_nul(value.strip(), name) if isinstance(value, str) else value
        for name in ("full_name", "phone", "bio")
        if (value := getattr(body, name)) is not msgspec.UNSET
    }
    if changes.get("full_name") == "":
        raise ValidationFailed("full_name must not be blank")
    row = await profiles.update_profile(call.services.db, call.user.user_id, changes)
    if "full_name" in changes:
        catalog_changed(call.scope)  # reviews name their authors (author_name)
    return user_out(_found(row))


@router.delete("/api/v1/users/me", access="user", status=204)
async def delete_me(call: Call) -> None:
    """Delete User Account.

    Personal data is erased, tickets and sales records are kept.
    """
    services = call.services
    unusable = await services.passwords.hash("!" + secrets.token_hex(30))
    result = await profiles.anonymise_user(services.db, call.user.user_id, unusable)
    sessions, old_picture = _found(result)
    catalog_changed(call.scope)  # the name erased from the reviews the account wrote
    for session_id in sessions:
        await remember_session(services, session_id, False)
    await _forget_picture(services, call.user.user_id, old_picture)


@router.put("/api/v1/users/me/preferences", access="user", body=PreferencesIn, response=UserOut)
async def update_preferences(call: Call) -> UserOut:
    """Update User Preferences.

    Replaces the stored preferences as a whole.
    """
    body: PreferencesIn = call.body
    if body.preferred_cinema_ids:
        body.preferred_cinema_ids = list(dict.fromkeys(body.preferred_cinema_ids))
        missing = await profiles.missing_cinemas(call.services.db, body.preferred_cinema_ids)
        if missing:
            raise ValidationFailed(f"Unknown cinema ids: {', '.join(map(str, missing))}")
    prefs = msgspec.to_builtins(body)
    row = await profiles.set_preferences(call.services.db, call.user.user_id, prefs)
    return user_out(_found(row))


@router.put(
    "/api/v1/users/me/profile-picture-url", access="user", body=PictureUrlIn, response=UserOut
)
async def update_picture_url(call: Call) -> UserOut:
    """Update Profile Picture URL.

    An absolute http(s) URL elsewhere, or one of the caller's own uploaded pictures.
    """
    url = _no_nul(call.body.url.strip(), "url")
    if not _is_web_url(url):
        raise ValidationFailed("url must be an absolute http(s) URL")
    name = _stored_name(url)
    if name is not None and owner_of(name) != call.user.user_id:
        # Another user's file: pointing at it would make this user's next change delete it.
        raise ValidationFailed("url must be an external URL or a picture you uploaded")
    return await _set_picture(call.services, call.user.user_id, url)


@router.put(
    "/api/v1/users/me/profile-picture",
    errors=(400, 413, 415),
    access="user",
    body=PictureUpload,
    upload=True,
    response=UserOut,
)
async def upload_picture(call: Call) -> UserOut:
    """Upload Profile Picture.

    Multipart field ``file``; PNG, JPEG, WebP or GIF.
    """
    services = call.services
    data = await _read_upload(call.request, services.settings.max_upload_bytes)
    suffix = sniff_image(data)
    if suffix is None:
        raise UnsupportedMedia("Only PNG, JPEG, WebP or GIF images are accepted")
    name = await services.media.save(data, suffix, call.user.user_id)
    url = services.settings.public_url.rstrip("/") + MEDIA_PREFIX + name
    try:
        return await _set_picture(services, call.user.user_id, url)
    except NotFound:
        await services.media.delete(name)
        raise


@router.get("/media/profile-pictures/{name}")
async def get_picture(call: Call) -> Response:
    """An uploaded profile picture."""
    name = call.params["name"]
    data = await call.services.media.load(name)
    if data is None:
        raise NotFound("Picture not found")
    headers = {
        "Cache-Control": "public, max-age=31536000, immutable",
        "X-Content-Type-Options": "nosniff",
    }
    return Response(data, media_type=media_type(name), headers=headers)


@router.get("/api/v1/users/{user_id:int}", response=PublicProfile)
async def get_user(call: Call) -> PublicProfile:
    """Get User Profile.

    Public fields only.
    """
    row = _found(await profiles.public_profile(call.services.db, call.params["user_id"]))
    return PublicProfile(
        id=row["id"],
        full_name=row["full_name"],
        profile_picture_url=row["profile_picture_url"],
        created_at=row["created_at"],
        review_count=row["review_count"],
    )


def _is_web_url(url: str) -> bool:
    try:
        parts = urlsplit(url)
    except ValueError:  # e.g. an unclosed IPv6 bracket
        return False
    return parts.scheme.lower() in ("http", "https") and bool(parts.hostname)


async def _set_picture(services: Services, user_id: int, url: str) -> UserOut:
    result = await profiles.replace_picture_url(services.db, user_id, url)
    row, old = _found(result)
    # The old URL may be another spelling of the file the new one names: that file stays.
    if old is not None and old != url and _stored_name(old) != _stored_name(url):
        await _forget_picture(services, user_id, old)
    return user_out(row)


async def _forget_picture(services: Services, user_id: int, url: str | None) -> None:
    """Delete the user's own stored picture once their profile no longer points at it.

    Only a file whose name carries this user's id goes: external URLs, other users' files and
    files from before owners were recorded are left alone.
    """
    name = _stored_name(url) if url else None
    if name is not None and owner_of(name) == user_id:
        await services.media.delete(name)


def _stored_name(url: str) -> str | None:
    """The stored file's name if ``url`` names one of this server's pictures, else None.

    Judged by the path as a server resolves it (``_resolved``), whatever scheme, host and port
    the URL names: the server cannot know all of its own names (another host name, an address,
    a trailing dot, a proxy's), so any URL whose path ends in ``media/profile-pictures/NAME``
    names the stored file NAME.
    """
    try:
        path = urlsplit(url).path
    except ValueError:  # e.g. an unclosed IPv6 bracket: not ours
        return None
    segments = _resolved(path)
    if len(segments) < len(MEDIA_DIR) + 1:
        return None
    if [s.lower() for s in segments[-len(MEDIA_DIR) - 1 : -1]] != MEDIA_DIR:
        return None
    return segments[-1]


def _resolved(path: str) -> list[str]:
    """The segments of ``path`` as a server or browser may read it: percent-decoded (over and
    over: a proxy may decode once more), backslashes as slashes (browsers read them so), empty
    and ``.`` segments dropped, each ``..`` taking away the segment before it."""
    for _ in range(MAX_DECODES):
        decoded = unquote(path)
        if decoded == path:
            break
        path = decoded
    segments: list[str] = []
    for segment in path.replace("\\", "/").split("/"):
        if segment == "..":
            if segments:
                segments.pop()
        elif segment not in ("", "."):
            segments.append(segment)
    return segments


async def _read_upload(request: Request, limit: int) -> bytes:
    """The bytes of the multipart field ``file``; 413 as soon as the body outgrows the limit."""
    if not request.headers.get("content-type", "").startswith("multipart/form-data"):
        raise UnsupportedMedia("Expected multipart/form-data with a field named 'file'")
    declared = request.headers.get("content-length", "")
    if declared.isdigit() and int(declared) > limit + MULTIPART_OVERHEAD:
        raise PayloadTooLarge(f"The file is larger than {limit} bytes")
    parser = MultiPartParser(
        request.headers, _capped(request, limit + MULTIPART_OVERHEAD), max_files=1, max_fields=10
    )
    try:
        form = await parser.parse()
    except MultiPartException as exc:
        raise ValidationFailed(exc.message) from None
    try:
        upload = form.get("file")
        if not isinstance(upload, UploadFile):
            raise ValidationFailed("A file field named 'file' is required")
        data = await upload.read()
    finally:
        await form.close()
    if len(data) > limit:
        raise PayloadTooLarge(f"The file is larger than {limit} bytes")
    return data


async def _capped(request: Request, cap: int) -> AsyncGenerator[bytes, None]:
    seen = 0
    async for chunk in request.stream():
        seen += len(chunk)
        if seen > cap:
            raise PayloadTooLarge("Request body is too large")
        yield chunk


# Search history ------------------------------------------------------------------------------


def _entry(row: Any) -> HistoryEntry:
    return HistoryEntry(id=row["id"], query=row["query"], created_at=row["created_at"])


@router.get(
    "/api/v1/users/me/search-history", access="user", query=Page, response=list[HistoryEntry]
)
async def list_history(call: Call) -> list[HistoryEntry]:
    """Get User Search History.

    Newest first.
    """
    page: Page = call.query
    rows = await profiles.list_history(call.services.db, call.user.user_id, page.skip, page.limit)
    return [_entry(r) for r in rows]


@router.post(
    "/api/v1/users/me/search-history",
    access="user",
    body=HistoryIn,
    status=201,
    response=HistoryEntry,
)
async def add_history(call: Call) -> HistoryEntry:
    """Add Search Query."""
    query = _no_nul(call.body.query.strip(), "query")
    if not query:
        raise ValidationFailed("query must not be blank")
    return _entry(await profiles.add_history(call.services.db, call.user.user_id, query))


@router.delete("/api/v1/users/me/search-history/{entry_id:int}", access="user", status=204)
async def delete_history_entry(call: Call) -> None:
    """Delete Search Entry.

    Own entries only; another user's entry answers 404.
    """
    entry_id = call.params["entry_id"]
    if not await profiles.delete_history_entry(call.services.db, call.user.user_id, entry_id):
        raise NotFound("Search entry not found")


@router.delete("/api/v1/users/me/search-history", access="user", status=204)
async def clear_history(call: Call) -> None:
    """Clear User Search History."""
    await profiles.clear_history(call.services.db, call.user.user_id)
