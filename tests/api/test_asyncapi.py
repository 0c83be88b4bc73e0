"""``/asyncapi.json`` describes what the WebSocket really sends: every message a live session
produces (hold, extend, cancel, expiry, booking, pings) is listed there and valid against it."""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import Callable
from typing import Any

import asyncpg
import httpx
import jsonschema_rs
import orjson
import pytest
import websockets

import api.websockets
from api.errors import WS_CLOSE, WS_POLICY_VIOLATION, WS_TRY_AGAIN_LATER
from tests import factories as make
from tests.support import RESERVE, LiveServer, make_account, reserve

CHANNEL = "screeningUpdates"


async def document(server: LiveServer) -> dict[str, Any]:
    async with httpx.AsyncClient(base_url=server.url) as client:
        r = await client.get("/asyncapi.json")
    assert r.status_code == 200
    assert r.headers["content-type"].startswith("application/json")
    doc: dict[str, Any] = r.json()
    return doc


def sent_types(doc: dict[str, Any]) -> dict[str, dict[str, Any]]:
    """The ``type`` of every message the server sends -> its payload schema."""
    [send] = [op for op in doc["operations"].values() if op["action"] == "send"]
    channel = doc["channels"][CHANNEL]["messages"]
    found = {}
    for ref in send["messages"]:
        name = ref["$ref"].rsplit("/", 1)[-1]
        message = _resolve(doc, channel[name]["$ref"])
        payload = _resolve(doc, message["payload"]["$ref"])
        [tag] = payload["properties"]["type"]["enum"]
        found[tag] = message["payload"]
    return found


def _resolve(doc: dict[str, Any], ref: str) -> Any:
    node: Any = doc
    for part in ref.removeprefix("#/").split("/"):
        node = node[part]
    return node


async def test_the_document_describes_the_url_the_token_and_the_close_codes(
    server: LiveServer,
) -> None:
    doc = await document(server)
    assert doc["asyncapi"] == "3.0.0"
    channel = doc["channels"][CHANNEL]
    assert channel["address"] == "/ws/screenings/{screening_id}"
    assert set(channel["parameters"]) == {"screening_id"}
    query = channel["bindings"]["ws"]["query"]
    assert "token" in query["properties"] and "token" not in query.get("required", [])
    assert "since" in query["properties"] and "since" not in query.get("required", [])
    codes = {c["code"] for c in channel["x-close-codes"]}
    assert {*WS_CLOSE.values(), WS_POLICY_VIOLATION, WS_TRY_AGAIN_LATER} <= codes
    assert all(c["meaning"] for c in channel["x-close-codes"])
    assert "WebSocketStats" in doc["components"]["schemas"]
    for op in doc["operations"].values():  # every reference resolves
        for ref in op["messages"]:
            assert _resolve(doc, ref["$ref"])


async def test_every_message_of_a_live_session_is_documented_and_valid(
    make_server: Callable[..., LiveServer],
    db: asyncpg.Connection,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.setattr(api.websockets, "HEARTBEAT_S", 0.3)  # heartbeats without a long wait
    live = make_server(hold_seconds=1)
    doc = await document(live)
    documented = sent_types(doc)
    show = await make.show(db, 4)
    seats = show.seat_ids
    async with httpx.AsyncClient(base_url=live.url, timeout=15) as client:
        owner = await make_account(client, "asyncapi@example.com", "Async Api")
        url = f"{live.ws_url}/ws/screenings/{show.id}"
        sockets = [
            await websockets.connect(f"{url}?token={owner.token}"),
            await websockets.connect(url),
            await websockets.connect(f"{url}?since=0"),  # resuming from before the log: snapshot
        ]
        seen: list[dict[str, Any]] = []
        readers = [asyncio.create_task(_collect(ws, seen)) for ws in sockets]
        try:
            await _until(seen, lambda m: m["type"] == "connection_confirmed", 2)
            assert (await reserve(client, owner, show, seats[:1])).status_code == 201
            extend = "/api/v1/seat-reservations/extend?additional_minutes=1"
            hold = {"screening_id": show.id, "seat_ids": seats[:1]}
            r = await client.post(extend, json=hold, headers=owner.headers)
            assert r.status_code == 200, r.text
            cancel = f"/api/v1/seat-reservations/cancel/{show.id}?seat_ids={seats[0]}"
            assert (await client.delete(cancel, headers=owner.headers)).status_code == 204
            two = {"screening_id": show.id, "seat_ids": seats[1:3]}
            assert (await client.post(RESERVE, json=two, headers=owner.headers)).status_code == 201
            # The two holds expire (one seat_update per lease, or a bulk from the sweep).
            for seat in seats[1:3]:
                await _until(seen, lambda m, s=seat: _reports(m, s, "available"), 6)
            book = {"screening_id": show.id, "seat_ids": seats[1:4], "payment_id": "pay_async"}
            r = await client.post("/api/v1/tickets/book", json=book, headers=owner.headers)
            assert r.status_code == 201, r.text
            await _until(seen, lambda m: _bulk_of(m, "booked"), 3)
            await sockets[0].send("ping")
            await _until(seen, lambda m: m["type"] == "pong", 3)
            await _until(seen, lambda m: m["type"] == "ping", 3)
        finally:
            for ws in sockets:
                await ws.close()
            for task in readers:
                task.cancel()
                with contextlib.suppress(asyncio.CancelledError):
                    await task

    assert {m["type"] for m in seen} == set(documented)  # nothing undocumented, nothing unused
    validators = {
        tag: jsonschema_rs.Draft202012Validator(
            {**schema, "components": doc["components"]}, validate_formats=True
        )
        for tag, schema in documented.items()
    }
    for message in seen:
        errors = [e.message for e in validators[message["type"]].iter_errors(message)]
        assert not errors, (message, errors)
    owner_view = [m for m in seen if _bulk_of(m, "booked") and m["updates"][0].get("booked_by")]
    assert owner_view  # the owner's own seats name the owner; the document allows it


async def _collect(ws: Any, seen: list[dict[str, Any]]) -> None:
    with contextlib.suppress(websockets.ConnectionClosed):
        async for raw in ws:
            seen.append(orjson.loads(raw))


async def _until(seen: list[dict[str, Any]], check: Callable[[Any], bool], within: float) -> None:
    deadline = asyncio.get_running_loop().time() + within
    while not any(check(m) for m in seen):
        assert asyncio.get_running_loop().time() < deadline, f"not seen in {within} s: {seen}"
        await asyncio.sleep(0.02)


def _reports(message: dict[str, Any], seat: int, status: str) -> bool:
    updates = message.get("updates") or [message]
    return any(u.get("seat_id") == seat and u.get("status") == status for u in updates)


def _bulk_of(message: dict[str, Any], status: str) -> bool:
    updates = message.get("updates") or []
    return message["type"] == "bulk_seat_update" and all(u["status"] == status for u in updates)
