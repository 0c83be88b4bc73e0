"""A revoked session's open WebSockets are closed (1008) in every process, and only those."""

from __future__ import annotations

import asyncio
import time
from typing import Any

import asyncpg
import httpx
import orjson
import pytest
import websockets
from redis.asyncio import Redis

import api.websockets
from seatlock import keys
from seatlock.services.container import Services
from tests import factories as make
from tests.support import Account, LiveServer, login, make_account, reserve, watch, ws_closed

REVOKED = (1008, "Session has been revoked")
PROMPTLY_S = 0.5


def services_of(server: LiveServer) -> Services:
    app: Any = server._server.config.app
    services: Services = app.state.services
    return services


async def still_open(ws: Any) -> None:
    """``ws`` answers a ping: still served."""
    await ws.send("ping")
    async with asyncio.timeout(3):
        while orjson.loads(await ws.recv())["type"] != "pong":
            pass


@pytest.fixture(params=["direct", "queued"])
def path(request: pytest.FixtureRequest, monkeypatch: pytest.MonkeyPatch) -> str:
    """The server writes to the socket itself, or through a sender task (the test servers run
    in this process: the patch reaches them)."""
    if request.param == "queued":
        monkeypatch.setattr(api.websockets, "direct_socket", lambda websocket: None)
    return str(request.param)


async def test_logout_closes_that_sessions_sockets_at_once_and_no_others(
    client: httpx.AsyncClient,
    db: asyncpg.Connection,
    server: LiveServer,
    user: Account,
    other_user: Account,
    path: str,
) -> None:
    show = await make.show(db, 2)
    second_session = (await login(client, user.email))["access_token"]
    revoked = [await watch(server, show.id, user.token) for _ in range(2)]
    kept = [
        await watch(server, show.id, second_session),  # the same user, another session
        await watch(server, show.id, other_user.token),
        await watch(server, show.id),
    ]
    try:
        started = time.monotonic()
        r = await client.post("/api/v1/auth/logout", headers=user.headers)
        assert r.status_code in (200, 204)
        for ws in revoked:
            assert await ws_closed(ws, PROMPTLY_S) == REVOKED
        assert time.monotonic() - started < 1
        for ws in kept:
            await still_open(ws)
        other = Account(user.id, user.email, user.password, second_session, "")
        assert (await reserve(client, other, show, show.seat_ids[:1])).status_code == 201
        update = orjson.loads(await asyncio.wait_for(kept[0].recv(), 3))
        assert update["reserved_by"] == user.id
        # Its watchers left this process's hub: none is left behind.
        hub = services_of(server).hub
        assert len(hub._rooms[show.id]) == len(kept)
        assert services_of(server).sessions.watched().count(_session(server, user.token)) == 0
    finally:
        for ws in (*revoked, *kept):
            await ws.close()


async def test_a_revocation_through_another_process_closes_the_socket(
    make_server: Any, db: asyncpg.Connection, path: str
) -> None:
    """Each test server is a process of its own as far as sessions go (its own trust and
    revocation feed): the revocation reaches the first only by the channel."""
    first, second = make_server(), make_server()
    show = await make.show(db, 1)
    async with httpx.AsyncClient(base_url=second.url) as client:
        account = await make_account(client, "carol@example.com", "Carol Example")
        ws = await watch(first, show.id, account.token)
        try:
            started = time.monotonic()
            r = await client.post("/api/v1/auth/logout", headers=account.headers)
            assert r.status_code in (200, 204)
            assert await ws_closed(ws, PROMPTLY_S) == REVOKED
            assert time.monotonic() - started < 1
        finally:
            await ws.close()


async def test_revocations_missed_by_a_lost_feed_close_the_socket_once_it_is_back(
    db: asyncpg.Connection, redis: Redis, server: LiveServer, user: Account, path: str
) -> None:
    show = await make.show(db, 1)
    ws = await watch(server, show.id, user.token)
    try:
        assert await redis.client_kill_filter(_type="pubsub") >= 1
        # Revoked while no feed listens: written to Redis, its message lost.
        await redis.set(keys.session(_session(server, user.token)), b"0")
        assert await ws_closed(ws, 10) == REVOKED
    finally:
        await ws.close()


async def test_a_socket_admitted_as_its_session_is_revoked_is_closed(
    db: asyncpg.Connection, server: LiveServer, user: Account, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The revocation lands between the token's check and the watcher's join."""
    show = await make.show(db, 1)
    services = services_of(server)
    session = _session(server, user.token)
    admit = api.websockets._admit

    async def admit_then_revoke(websocket: Any, services: Services) -> Any:
        admitted = await admit(websocket, services)
        services.sessions.revoke([session])
        return admitted

    monkeypatch.setattr(api.websockets, "_admit", admit_then_revoke)
    url = f"{server.ws_url}/ws/screenings/{show.id}?token={user.token}"
    async with websockets.connect(url) as ws:
        assert await ws_closed(ws, 3) == REVOKED
    assert session not in services.sessions.watched()


def _session(server: LiveServer, token: str) -> str:
    return services_of(server).tokens.decode(token).session_id
