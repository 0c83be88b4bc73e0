"""JSON in and out: msgspec for typed bodies and responses, one encoder for every route.

Every request body and query string is checked here before a route sees it (invariant 10): no
text with a NUL character (PostgreSQL refuses it in text and jsonb, Redis keys and mail headers
would carry it) and no JSON nested deeper than MAX_DEPTH (deep nesting exhausts the decoder's
recursion and later the jsonb encoder's), both refused before any Redis or PostgreSQL call.
Every refusal of a request's shape is a 422 in FastAPI's form (api/validation.py lists the
problems), malformed JSON included.
"""

from __future__ import annotations

import re
from typing import Any

import msgspec
from starlette.responses import Response

from api.validation import Loc, Problem, problem, validate
from seatlock.errors import PayloadTooLarge, RequestInvalid

MAX_BODY_BYTES = 1024 * 1024
MAX_DEPTH = 32  # arrays and objects in one another; our bodies nest a handful at most
NUL = "\x00"
SHOWN_NUL = "\ufffd"  # in place of a NUL in a 422 problem
NUL_ESCAPE = b"\\u0000"  # how a NUL is written in JSON (a raw NUL byte is malformed JSON)
TOO_DEEP = "JSON body is nested too deeply"
NUL_TEXT = "Value error, text must not contain NUL characters"
BODY: Loc = ("body",)
_AT_BYTE = re.compile(r"\(byte (\d+)\)")
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


def decode_body(raw: bytes, kind: Any) -> Any:
    if len(raw) > MAX_BODY_BYTES:
        raise PayloadTooLarge("Request body is too large")
    if not raw or raw.isspace():  # what `not raw.strip()` says, without copying the body
        raise RequestInvalid([problem("missing", BODY, "Field required", None)])
    if raw.count(b"[") + raw.count(b"{") > MAX_DEPTH and nested_deeper(raw, MAX_DEPTH):
        raise RequestInvalid([json_invalid(BODY, TOO_DEEP)])
    try:
        if NUL_ESCAPE in raw:  # rare: only then is the body decoded twice
            refuse_nul(msgspec.json.decode(raw), BODY)
        return _decoder(kind).decode(raw)
    except msgspec.ValidationError:
        return _revalidate(raw, kind)
    except msgspec.DecodeError as exc:
        raise RequestInvalid([malformed(raw, str(exc))]) from None
    except RecursionError:  # not reached under MAX_DEPTH; kept as the decoder's own limit
        raise RequestInvalid([json_invalid(BODY, TOO_DEEP)]) from None


def _decoder(kind: Any) -> msgspec.json.Decoder[Any]:
    """The lax decoder of ``kind``: ``"7"`` and ``7.0`` for an int, ``"true"`` for a bool, as
    FastAPI (pydantic's lax mode) takes them."""
    decoder = _DECODERS.get(kind)
    if decoder is None:
        decoder = _DECODERS[kind] = msgspec.json.Decoder(kind, strict=False)
    return decoder


_DECODERS: dict[Any, msgspec.json.Decoder[Any]] = {}  # one per declared body type


def _revalidate(raw: bytes, kind: Any) -> Any:
    """msgspec refused the body: every problem of it, or the value if pydantic's lax rules
    take what msgspec's do not. The text may still be malformed past the first problem."""
    try:
        data = msgspec.json.decode(raw)
    except msgspec.DecodeError as exc:
        raise RequestInvalid([malformed(raw, str(exc))]) from None
    return validate(data, kind, BODY)


def malformed(raw: bytes, error: str) -> Problem:
    """FastAPI's answer to a body that is not JSON, at the byte msgspec stopped at."""
    found = _AT_BYTE.search(error)
    where = int(found.group(1)) if found else len(raw)  # "truncated": the end
    reason = error[: found.start()].rstrip() if found else error
    return json_invalid((*BODY, where), reason.removeprefix("JSON is malformed: "))


def json_invalid(loc: Loc, reason: str) -> Problem:
    return problem("json_invalid", loc, "JSON decode error", {}, {"error": reason})


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


def refuse_nul(value: Any, root: Loc) -> None:
    """RequestInvalid (422) naming every text with a NUL character in ``value``."""
    problems: list[Problem] = []
    _find_nul(value, root, problems)
    if problems:
        raise RequestInvalid(problems)


def _find_nul(value: Any, loc: Loc, problems: list[Problem]) -> None:
    # The problem never carries the NUL itself (it reaches logs): "\0" stands for it.
    if isinstance(value, str):
        if NUL in value:
            problems.append(problem("value_error", loc, NUL_TEXT, value.replace(NUL, SHOWN_NUL)))
    elif isinstance(value, dict):
        for key, item in value.items():
            if NUL in key:
                where = (*loc, key.replace(NUL, SHOWN_NUL))
                problems.append(problem("value_error", where, NUL_TEXT, where[-1]))
            else:
                _find_nul(item, (*loc, key), problems)
    elif isinstance(value, list):
        for i, item in enumerate(value):
            _find_nul(item, (*loc, i), problems)


def convert(data: Any, kind: type[Any], root: Loc = ("query",)) -> Any:
    """Validate loosely typed data (query strings, form fields) into ``kind``; problems are
    located under ``root``."""
    refuse_nul(data, root)
    try:
        return msgspec.convert(data, type=kind, strict=False)
    except msgspec.ValidationError:
        return validate(data, kind, root)
