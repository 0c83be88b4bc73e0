"""JSON in and out: msgspec for typed bodies and responses, one encoder for every route.

Every request body and query string is checked here before a route sees it (invariant 10): no
text with a NUL character (PostgreSQL refuses it in text and jsonb, Redis keys and mail headers
would carry it) and no JSON nested deeper than MAX_DEPTH (deep nesting exhausts the decoder's
recursion and later the jsonb encoder's), both refused before any Redis or PostgreSQL call.
"""

from __future__ import annotations

import re
from typing import Any

import msgspec
from starlette.responses import Response

from seatlock.errors import InvalidInput, PayloadTooLarge, ValidationFailed

MAX_BODY_BYTES = 1024 * 1024
MAX_DEPTH = 32  # arrays and objects in one another; our bodies nest a handful at most
NUL = "\x00"
NUL_ESCAPE = b"\\u0000"  # how a NUL is written in JSON (a raw NUL byte is malformed JSON)
TOO_DEEP = "JSON body is nested too deeply"
# A JSON string, or an unterminated one up to the end: it always matches once it starts, so
# blanking strings is one linear scan whatever the text.
_STRING = re.compile(rb'"(?:[^"\\]|\\.)*(?:"|\\?\Z)', re.S)
_NOT_BRACKET = bytes(b for b in range(256) if b not in b"[]{}")

_encoder = msgspec.json.Encoder(decimal_format="number")


def dumps(value: Any) -> bytes:
    return _encoder.encode(value)


class Encoded:
    """A handler's answer already encoded as JSON (a pre-rendered seat map), sent as it is."""

    __slots__ = ("body",)

    def __init__(self, body: bytes) -> None:
        self.body = body


class JSON(Response):
    media_type = "application/json"

    def render(self, content: Any) -> bytes:
        return dumps(content)


def decode_body(raw: bytes, kind: type[Any]) -> Any:
    if len(raw) > MAX_BODY_BYTES:
        raise PayloadTooLarge("Request body is too large")
    if not raw or raw.isspace():  # what `not raw.strip()` says, without copying the body
        raise ValidationFailed("Request body is required")
    if raw.count(b"[") + raw.count(b"{") > MAX_DEPTH and nested_deeper(raw, MAX_DEPTH):
        raise InvalidInput(TOO_DEEP)
    try:
        if NUL_ESCAPE in raw:  # rare: only then is the body decoded twice
            refuse_nul(msgspec.json.decode(raw))
        return msgspec.json.decode(raw, type=kind)
    except msgspec.ValidationError as exc:
        raise ValidationFailed(str(exc)) from None
    except msgspec.DecodeError:
        raise InvalidInput("Malformed JSON body") from None
    except RecursionError:  # not reached under MAX_DEPTH; kept as the decoder's own limit
        raise InvalidInput(TOO_DEEP) from None


def nested_deeper(raw: bytes, depth: int) -> bool:
    """Whether the JSON text nests arrays and objects more than ``depth`` levels (for sure
    past twice that; anything up to ``depth`` passes).

    Linear scans in C, never recursion: strings are dropped, then every byte but brackets; each
    pass removes the innermost ``[]`` and then ``{}`` pairs, one or two levels. Brackets left
    after ``depth`` passes are deeper (or unbalanced, which the decoder refuses anyway).
    """
    brackets = _STRING.sub(b"", raw).translate(None, _NOT_BRACKET)
    for _ in range(depth):
        if not brackets:
            return False
        brackets = brackets.replace(b"[]", b"").replace(b"{}", b"")
    return bool(brackets)


def refuse_nul(value: Any) -> None:
    """ValidationFailed (422) naming the first text with a NUL character in ``value``."""
    path = _nul_path(value, "$")
    if path is not None:
        raise ValidationFailed(f"Text must not contain NUL characters - at `{path}`")


def _nul_path(value: Any, path: str) -> str | None:
    if isinstance(value, str):
        return path if NUL in value else None
    if isinstance(value, dict):
        for key, item in value.items():
            where = f"{path}.{key}"
            if NUL in key:
                return where.replace(NUL, "\\0")  # the detail never carries the NUL itself
            found = _nul_path(item, where)
            if found is not None:
                return found
    elif isinstance(value, list):
        for i, item in enumerate(value):
            found = _nul_path(item, f"{path}[{i}]")
            if found is not None:
                return found
    return None


def convert(data: Any, kind: type[Any]) -> Any:
    """Validate loosely typed data (query strings, form fields) into ``kind``."""
    refuse_nul(data)
    try:
        return msgspec.convert(data, type=kind, strict=False)
    except msgspec.ValidationError as exc:
        raise ValidationFailed(str(exc)) from None
