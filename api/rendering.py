"""JSON in and out: msgspec for typed bodies and responses, one encoder for every route."""

from __future__ import annotations

from typing import Any

import msgspec
from starlette.responses import Response

from seatlock.errors import InvalidInput, PayloadTooLarge, ValidationFailed

MAX_BODY_BYTES = 1024 * 1024

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
    try:
        return msgspec.json.decode(raw, type=kind)
    except msgspec.ValidationError as exc:
        raise ValidationFailed(str(exc)) from None
    except msgspec.DecodeError:
        raise InvalidInput("Malformed JSON body") from None


def convert(data: Any, kind: type[Any]) -> Any:
    """Validate loosely typed data (query strings, form fields) into ``kind``."""
    try:
        return msgspec.convert(data, type=kind, strict=False)
    except msgspec.ValidationError as exc:
        raise ValidationFailed(str(exc)) from None
