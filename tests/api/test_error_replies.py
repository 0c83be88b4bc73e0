"""What a refusal looks like on the wire (status, headers, JSON body), and the request parsing in
front of it: bearer tokens and bodies read straight from the ASGI messages."""

from __future__ import annotations

from typing import Any

import msgspec
import pytest

from api import errors as api_errors
from api.auth import bearer_token
from api.errors import detail_body, error_reply, status_of
from api.rendering import MAX_BODY_BYTES, decode_body
from api.routing import read_body
from seatlock import errors
from seatlock.engine.errors import ScreeningNotFound, SeatsUnavailable, TooManySeats


class Shape(msgspec.Struct):
    a: int


class Grandchild(ScreeningNotFound):
    pass


class Unmapped(errors.SeatLockError):
    pass


@pytest.mark.parametrize(
    ("exc", "status", "headers"),
    [
        (SeatsUnavailable([3, 1], booked=False), 409, []),
        (TooManySeats(4), 409, []),
        (Grandchild(7), 404, []),
        (Unmapped("odd"), 400, []),
        (errors.NotAuthenticated("Not authenticated"), 401, [(b"www-authenticate", b"Bearer")]),
        (errors.Forbidden("Admin privileges required"), 403, []),
        (errors.TooManyRequests("Slow down", retry_after=7), 429, [(b"retry-after", b"7")]),
        (errors.Unavailable("Later"), 503, [(b"retry-after", b"1")]),
    ],
)
def test_error_reply(exc: errors.SeatLockError, status: int, headers: list[Any]) -> None:
    for _ in range(2):  # the second time from what the first one kept
        assert error_reply(exc) == (status, headers, msgspec.json.encode({"detail": exc.detail}))
        assert status_of(exc) == status


def test_error_reply_headers_are_never_shared() -> None:
    exc = errors.NotAuthenticated("Not authenticated")
    first, second = error_reply(exc)[1], error_reply(exc)[1]
    assert first == second and first is not second


def test_errors_keep_their_detail_as_their_only_argument() -> None:
    exc = errors.TooManyRequests("Slow down", retry_after=3)
    assert (exc.args, str(exc), exc.detail, exc.retry_after) == (
        ("Slow down",),
        "Slow down",
        "Slow down",
        3,
    )
    taken = SeatsUnavailable([2], booked=False)
    assert taken.args == ("Seats [2] are currently reserved by other users",)
    assert repr(errors.Conflict("x")) == "Conflict('x')"


def test_detail_bodies_kept_are_bounded(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(api_errors, "MAX_KEPT_BODIES", 3)
    monkeypatch.setattr(api_errors, "_BODIES", {})
    for n in range(10):
        assert detail_body(f"refusal {n}") == b'{"detail":"refusal %d"}' % n
        assert len(api_errors._BODIES) <= 3
    long = "x" * (api_errors.MAX_KEPT_DETAIL + 1)
    assert detail_body(long) == msgspec.json.encode({"detail": long})
    assert long not in api_errors._BODIES
    assert detail_body('quote " and \u00e9') == '{"detail":"quote \\" and \u00e9"}'.encode()


def auth(value: bytes) -> list[tuple[bytes, bytes]]:
    return [(b"host", b"x"), (b"authorization", value), (b"authorization", b"Bearer second")]


@pytest.mark.parametrize(
    ("value", "token"),
    [
        (b"Bearer abc.def", "abc.def"),
        (b"bearer abc", "abc"),
        (b"BEARER abc", "abc"),
        (b"Bearer   abc  ", "abc"),
        (b"Bearer abc def", "abc def"),
        (b"Bearer \xa0abc\xa0", "abc"),  # str.strip() of the latin-1 text, as before
        (b"Bearer", None),
        (b"Bearer ", None),
        (b"Bearer    ", None),
        (b"Bearer\tabc", None),  # the scheme ends at the first space only
        (b"Bearerabc", None),
        (b" Bearer abc", None),
        (b"Basic dXNlcjpwYXNz", None),
        (b"Bearee abc", None),
        (b"B\xe9arer abc", None),
        (b"", None),
    ],
)
def test_bearer_token(value: bytes, token: str | None) -> None:
    assert bearer_token(auth(value)) == token


def test_bearer_token_without_authorization() -> None:
    assert bearer_token([(b"host", b"x")]) is None
    assert bearer_token([]) is None


def feed(*messages: dict[str, Any]) -> Any:
    queue = list(messages)

    async def receive() -> dict[str, Any]:
        return queue.pop(0)

    return receive


def body(chunk: bytes, more: bool = False) -> dict[str, Any]:
    return {"type": "http.request", "body": chunk, "more_body": more}


async def test_read_body() -> None:
    assert await read_body(feed(body(b'{"a": 1}'))) == b'{"a": 1}'
    assert await read_body(feed({"type": "http.request"})) == b""
    assert await read_body(feed(body(b'{"a"', True), body(b": 1", True), body(b"}"))) == b'{"a": 1}'
    assert await read_body(feed(body(b"{", True), {"type": "http.disconnect"})) == b"{"
    assert await read_body(feed({"type": "http.disconnect"})) == b""


async def test_read_body_refuses_too_large_bodies() -> None:
    with pytest.raises(errors.PayloadTooLarge):
        await read_body(feed(body(b" " * (MAX_BODY_BYTES + 1))))
    half = b" " * (MAX_BODY_BYTES // 2 + 1)
    with pytest.raises(errors.PayloadTooLarge):
        await read_body(feed(body(half, True), body(half), body(b"never read")))
    assert await read_body(feed(body(b" " * MAX_BODY_BYTES))) == b" " * MAX_BODY_BYTES


@pytest.mark.parametrize("raw", [b"", b" ", b"\r\n\t\x0b\x0c "])
def test_blank_body_is_required(raw: bytes) -> None:
    with pytest.raises(errors.RequestInvalid) as refused:
        decode_body(raw, Shape)
    assert refused.value.errors == [
        {"type": "missing", "loc": ["body"], "msg": "Field required", "input": None}
    ]


def test_body_with_surrounding_whitespace() -> None:
    assert decode_body(b' \n{"a": 1}\n ', Shape) == Shape(1)
    with pytest.raises(errors.RequestInvalid, match="JSON decode error"):
        decode_body(b"\xa0", Shape)
