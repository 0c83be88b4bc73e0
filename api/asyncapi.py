"""``/asyncapi.json``: the WebSocket protocol as an AsyncAPI 3.0 document.

Built from the message types the server encodes (``api/websockets.py``, and the seat updates of
``seatlock/engine/events.py``) through msgspec's JSON Schema, like ``/openapi.json``, and from the
close codes of ``api/errors.py``: a close code added there without a meaning in CLOSE_MEANING stops
the app from building, a message type sent but not listed here fails tests/api/test_asyncapi.py.
"""

from __future__ import annotations

from typing import Any

import msgspec

from api.errors import WS_CLOSE, WS_POLICY_VIOLATION, WS_TRY_AGAIN_LATER
from api.websockets import HEARTBEAT_S, ConnectionConfirmed, Ping, Pong, SeatSnapshot, StatsOut
from seatlock.engine.events import STATS_INTERVAL_S, STATS_TTL_MS, BulkSeatUpdate, SeatUpdate
from seatlock.errors import NotFound

CHANNEL = "screeningUpdates"
REF = "#/components/schemas/{name}"

# What every close code the server sends means to a client (RFC 6455 codes and one private one).
CLOSE_MEANING: dict[int, str] = {
    WS_POLICY_VIOLATION: (
        "The token was refused: malformed, expired, or its session revoked (log in again, or "
        "connect without a token); or since is not a version (the reason says so). Sent right "
        "after the handshake, before connection_confirmed."
    ),
    WS_CLOSE[NotFound]: (
        "No such screening: on connect, or to every watcher once the screening is deleted;"
        " do not retry."
    ),
    WS_TRY_AGAIN_LATER: (
        "Try again later: Redis or PostgreSQL cannot answer now (before connection_confirmed), "
        "or the client read too slowly and was dropped (reason 'Too slow; reconnect'). "
        "Reconnect with back-off, then re-read the availability: changes made meanwhile were "
        "not sent."
    ),
    1012: "The server process is stopping (a restart or a deploy): reconnect.",
    1011: "The server's protocol-level keepalive ping went unanswered.",
}

# Sent by the server, in the order a client usually meets them: (message name, type, summary).
SERVER_MESSAGES: list[tuple[str, type[msgspec.Struct], str]] = [
    ("connectionConfirmed", ConnectionConfirmed, "Watching: every change from now on is sent"),
    (
        "seatSnapshot",
        SeatSnapshot,
        "The whole map: resuming from a version whose changes are not all kept, or the"
        " screening moved to another room",
    ),
    ("seatUpdate", SeatUpdate, "One seat changed"),
    ("bulkSeatUpdate", BulkSeatUpdate, "Several seats changed in one step"),
    ("ping", Ping, f"Heartbeat after {HEARTBEAT_S:g} s with nothing sent"),
    ("pong", Pong, "The answer to a client's ping"),
]
CLIENT_PING = {
    "name": "clientPing",
    "title": "ping",
    "summary": 'The text "ping" or the JSON {"type": "ping"}: answered with a pong',
    "contentType": "text/plain",
    "payload": {"type": "string", "examples": ["ping", '{"type": "ping"}']},
}

DESCRIPTION = f"""Real-time seat changes of one screening.

Connect, wait for `connection_confirmed`, then read the availability over REST
(`GET /api/v1/seat-reservations/screening/{{screening_id}}/availability`): no snapshot is sent
on connect, and every change made after the confirmation arrives as `seat_update` (one seat) or
`bulk_seat_update` (several). Apply them in the order received: one connection delivers in
publish order, so updates of one seat are never reordered. A `bulk_seat_update` listing every
seat is also sent after the server lost its own event feed for a while (a resync).

Every update carries the screening's `version` after it. A client that reconnects with
`?since=VERSION` (the last version it saw) is sent, right after `connection_confirmed`, every
update after that version in order, then live ones: no gap, no duplicate, and no need to read
the availability again. When those changes are no longer all kept (the server keeps the latest
few hundred per screening), or the screening was reset meanwhile, it gets one `seat_snapshot`
instead: the whole map, shaped like the availability answer, with its version. Every watcher
gets one too when the screening moves to another room (its holds end): replace the map with it.

Errors are close frames, never JSON messages: see `x-close-codes`. Anything the client sends
but a ping is ignored.

`GET /ws/stats` (described in /openapi.json, schema `WebSocketStats` here) counts the
connections of every server process: another process's figures are up to
{STATS_INTERVAL_S:g} s old, a dead process drops out within {STATS_TTL_MS / 1000:g} s."""

TOKEN_TEXT = (
    "Optional access token (the bearer JWT of /api/v1/auth/login). With it, the holder's or "
    "buyer's id is shown in the updates of that user's own seats; without it, never. A token "
    "given but not valid closes the connection (1008), it is not ignored."
)


SINCE_TEXT = (
    "Resume: the last version seen (of an update, a seat_snapshot, or the availability's "
    "X-Seat-Map-Version header). The updates after it are sent first, or one seat_snapshot "
    "when they are not all kept. Not a whole number: the connection is closed (1008)."
)


def asyncapi_document(version: str) -> dict[str, Any]:
    """The AsyncAPI 3.0 document of ``/ws/screenings/{screening_id}``."""
    types = [kind for _, kind, _ in SERVER_MESSAGES]
    schemas, components = msgspec.json.schema_components([*types, StatsOut], ref_template=REF)
    components["WebSocketStats"] = components.pop("StatsOut")
    messages = {
        name: _message(name, kind, summary, schema)
        for (name, kind, summary), schema in zip(SERVER_MESSAGES, schemas[:-1], strict=True)
    }
    messages["clientPing"] = CLIENT_PING
    return {
        "asyncapi": "3.0.0",
        "info": {"title": "seatlock seat updates", "version": version, "description": DESCRIPTION},
        "defaultContentType": "application/json",
        "servers": {"seatlock": _server()},
        "channels": {CHANNEL: _channel(messages)},
        "operations": _operations(),
        "components": {"schemas": components, "messages": messages},
    }


def _message(name: str, kind: type[msgspec.Struct], summary: str, schema: Any) -> dict[str, Any]:
    tag = kind.__struct_config__.tag
    return {"name": name, "title": str(tag), "summary": summary, "payload": schema}


def _server() -> dict[str, Any]:
    return {
        "host": "{host}",
        "protocol": "ws",
        "description": "The seatlock server itself (wss behind TLS).",
        "variables": {"host": {"default": "localhost:8000"}},
    }


def _channel(messages: dict[str, Any]) -> dict[str, Any]:
    query = {
        "type": "object",
        "properties": {
            "token": {"type": "string", "description": TOKEN_TEXT},
            "since": {"type": "string", "pattern": "^[0-9]+$", "description": SINCE_TEXT},
        },
    }
    return {
        "address": "/ws/screenings/{screening_id}",
        "title": "Seat updates of one screening",
        "description": DESCRIPTION,
        "parameters": {"screening_id": {"description": "The screening's id (an integer)."}},
        "messages": {name: {"$ref": f"#/components/messages/{name}"} for name in messages},
        "bindings": {"ws": {"method": "GET", "query": query, "bindingVersion": "0.1.0"}},
        "x-close-codes": [{"code": code, "meaning": CLOSE_MEANING[code]} for code in close_codes()],
    }


def _operations() -> dict[str, Any]:
    channel = {"$ref": f"#/channels/{CHANNEL}"}
    sent = [{"$ref": f"#/channels/{CHANNEL}/messages/{name}"} for name, _, _ in SERVER_MESSAGES]
    return {
        "sendSeatUpdates": {
            "action": "send",
            "channel": channel,
            "summary": "The server sends the confirmation, seat updates and heartbeats",
            "messages": sent,
        },
        "receivePing": {
            "action": "receive",
            "channel": channel,
            "summary": "The server answers a client's ping with a pong",
            "messages": [{"$ref": f"#/channels/{CHANNEL}/messages/clientPing"}],
            "reply": {
                "channel": channel,
                "messages": [{"$ref": f"#/channels/{CHANNEL}/messages/pong"}],
            },
        },
    }


def close_codes() -> list[int]:
    """Every close code the server sends: those of api/errors.py, then uvicorn's own."""
    ours = sorted({*WS_CLOSE.values(), WS_POLICY_VIOLATION, WS_TRY_AGAIN_LATER})
    missing = [code for code in ours if code not in CLOSE_MEANING]
    if missing:
        raise LookupError(f"close codes without a meaning in CLOSE_MEANING: {missing}")
    return ours + [code for code in CLOSE_MEANING if code not in ours]
