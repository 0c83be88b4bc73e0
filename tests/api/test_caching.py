"""Compression, ETags and 304s, Cache-Control: seat maps and catalog reads through real HTTP."""

from __future__ import annotations

import asyncio
import gzip
import zlib
from collections.abc import AsyncIterator
from typing import Any

import asyncpg
import brotli
import httpx
import orjson
import pytest
from redis.asyncio import Redis

from api.caching import MIN_SIZE, Compression, choose_coding, matches
from api.seatmaps import NEVER, Rendered, SeatJson, free_reply, map_reply
from tests import factories as make
from tests.support import RESERVE, Account, LiveServer, make_account, reserve

FRONTEND = "http://localhost:3000"
CANCEL = "/api/v1/seat-reservations/cancel"


def seat_map(show: make.Show) -> str:
    return f"/api/v1/seat-reservations/screening/{show.id}/availability"


def map_paths(show: make.Show) -> list[str]:
    return [
        seat_map(show),
        f"/api/v1/showtimes/{show.id}/seats",
        f"/api/v1/screenings/{show.id}/available-seats",
    ]


@pytest.fixture
async def plain(server: LiveServer) -> AsyncIterator[httpx.AsyncClient]:
    """A client that sends no Accept-Encoding at all (httpx sends one by default)."""
    async with httpx.AsyncClient(base_url=server.url, timeout=15) as c:
        del c.headers["accept-encoding"]
        yield c


async def raw_get(
    client: httpx.AsyncClient, path: str, headers: dict[str, str]
) -> tuple[httpx.Response, bytes]:
    """The answer and its body as sent on the wire (not decoded by httpx)."""
    async with client.stream("GET", path, headers=headers) as r:
        return r, b"".join([chunk async for chunk in r.aiter_raw()])


def vary(r: httpx.Response) -> set[str]:
    return {part.strip().lower() for part in r.headers.get("vary", "").split(",") if part}


# -- compression ----------------------------------------------------------------------------------


@pytest.mark.parametrize("coding", ["gzip", "br"])
async def test_seat_maps_are_compressed_for_clients_that_ask(
    plain: httpx.AsyncClient, db: asyncpg.Connection, user: Account, coding: str
) -> None:
    show = await make.show(db, 40)
    assert (await reserve(plain, user, show, show.seat_ids[:2])).status_code == 201
    unpack = gzip.decompress if coding == "gzip" else brotli.decompress
    for path in map_paths(show):
        for who in ({}, user.headers):  # the public map (stored) and the holder's own view
            identity = await plain.get(path, headers=who)
            assert identity.status_code == 200
            assert "content-encoding" not in identity.headers
            assert len(identity.content) > MIN_SIZE
            r, wire = await raw_get(plain, path, {**who, "Accept-Encoding": f"{coding}, deflate"})
            assert r.status_code == 200
            assert r.headers["content-encoding"] == coding
            assert {"accept-encoding", "origin"} <= vary(r)
            assert int(r.headers["content-length"]) == len(wire) < len(identity.content) / 4
            assert orjson.loads(unpack(wire)) == identity.json()
            assert r.headers["etag"] != identity.headers["etag"]  # one ETag per coding


async def test_br_is_preferred_and_a_refused_coding_is_not_used(
    plain: httpx.AsyncClient, db: asyncpg.Connection
) -> None:
    show = await make.show(db, 40)
    r = await plain.get(seat_map(show), headers={"Accept-Encoding": "gzip, br"})
    assert r.headers["content-encoding"] == "br"
    r = await plain.get(seat_map(show), headers={"Accept-Encoding": "br;q=0, gzip"})
    assert r.headers["content-encoding"] == "gzip"
    r = await plain.get(seat_map(show), headers={"Accept-Encoding": "identity"})
    assert "content-encoding" not in r.headers
    assert len(r.json()) == 40


async def test_catalog_answers_are_compressed_above_the_threshold_only(
    plain: httpx.AsyncClient, db: asyncpg.Connection
) -> None:
    movie_id = await make.movie(db, "Heat")
    for n in range(12):
        await make.movie(db, f"Movie number {n}", description="A long story. " * 10)
    small = await plain.get(f"/api/v1/movies/{movie_id}", headers={"Accept-Encoding": "gzip"})
    assert small.status_code == 200 and len(small.content) < MIN_SIZE
    assert "content-encoding" not in small.headers
    bare = await plain.get("/api/v1/movies/?limit=100")
    assert "content-encoding" not in bare.headers and len(bare.content) > MIN_SIZE
    for coding in ("gzip", "br"):
        r, wire = await raw_get(plain, "/api/v1/movies/?limit=100", {"Accept-Encoding": coding})
        assert (r.status_code, r.headers["content-encoding"]) == (200, coding)
        assert "accept-encoding" in vary(r)
        unpack = gzip.decompress if coding == "gzip" else brotli.decompress
        assert orjson.loads(unpack(wire)) == bare.json()
        assert r.headers["etag"] != bare.headers["etag"]  # one strong ETag per coding
        again = await plain.get(
            "/api/v1/movies/?limit=100",
            headers={"Accept-Encoding": coding, "If-None-Match": r.headers["etag"]},
        )
        assert (again.status_code, again.headers["etag"]) == (304, r.headers["etag"])


async def test_refusals_and_writes_are_sent_as_they_are(
    client: httpx.AsyncClient, db: asyncpg.Connection, user: Account, other_user: Account
) -> None:
    show = await make.show(db, 2)
    held = await reserve(client, user, show, show.seat_ids)
    assert held.status_code == 201
    assert "etag" not in held.headers and "cache-control" not in held.headers
    taken = await reserve(client, other_user, show, show.seat_ids)
    assert taken.status_code == 409
    assert "content-encoding" not in taken.headers and "etag" not in taken.headers


# -- seat maps: ETag and 304 ----------------------------------------------------------------------


async def test_a_repeated_seat_map_read_is_a_304_without_a_body(
    client: httpx.AsyncClient, db: asyncpg.Connection
) -> None:
    show = await make.show(db, 40)
    await client.get(seat_map(show))  # loads the screening into Redis (no version yet: no ETag)
    for path in map_paths(show):
        first = await client.get(path)
        etag = first.headers["etag"]
        assert first.headers["cache-control"] == "no-cache"
        assert {"origin", "accept-encoding"} <= vary(first)
        again = await client.get(path, headers={"If-None-Match": etag})
        assert (again.status_code, again.content) == (304, b"")
        assert again.headers["etag"] == etag
        assert again.headers["cache-control"] == "no-cache"
        for header in (f'"other", W/{etag}', "*"):
            assert (await client.get(path, headers={"If-None-Match": header})).status_code == 304
        r = await client.get(path, headers={"If-None-Match": '"something-else"'})
        assert (r.status_code, r.json()) == (200, first.json())


async def test_a_hold_and_a_cancel_change_the_etag(
    client: httpx.AsyncClient, db: asyncpg.Connection, user: Account
) -> None:
    show = await make.show(db, 4)
    seat = show.seat_ids[0]
    await client.get(seat_map(show))  # loads the screening into Redis
    before = {path: (await client.get(path)).headers["etag"] for path in map_paths(show)}
    assert (await reserve(client, user, show, [seat])).status_code == 201
    held = {}
    for path in map_paths(show):
        r = await client.get(path, headers={"If-None-Match": before[path]})
        assert r.status_code == 200, path  # never a stale 304
        held[path] = r.headers["etag"]
        assert held[path] != before[path]
    r = await client.delete(f"{CANCEL}/{show.id}?seat_ids={seat}", headers=user.headers)
    assert r.status_code == 204
    for path in map_paths(show):
        r = await client.get(path, headers={"If-None-Match": held[path]})
        assert r.status_code == 200, path
        assert r.headers["etag"] not in (held[path], before[path])  # the version moved on
        assert all(s["status"] == "available" for s in r.json())


async def test_an_expired_hold_changes_the_etag_without_any_event(
    make_server: Any, db: asyncpg.Connection, redis: Redis
) -> None:
    """No keyspace event, no sweep: the hold's deadline alone must end the 304s."""
    server: LiveServer = make_server(hold_seconds=1, sweep_interval_seconds=600)
    events = (await redis.config_get("notify-keyspace-events"))["notify-keyspace-events"]
    await redis.config_set("notify-keyspace-events", "")
    try:
        async with httpx.AsyncClient(base_url=server.url, timeout=15) as client:
            show = await make.show(db, 2)
            holder = await make_account(client, "holder@example.com", "Holder")
            assert (await reserve(client, holder, show, show.seat_ids[:1])).status_code == 201
            r = await client.get(seat_map(show))
            etag = r.headers["etag"]
            assert r.json()[0]["status"] == "reserved"
            assert (
                await client.get(seat_map(show), headers={"If-None-Match": etag})
            ).status_code == 304
            await asyncio.sleep(1.1)
            r = await client.get(seat_map(show), headers={"If-None-Match": etag})
            assert r.status_code == 200
            assert r.json()[0]["status"] == "available"
            assert r.headers["etag"] != etag
    finally:
        await redis.config_set("notify-keyspace-events", events or "")


async def test_each_viewer_has_the_etag_of_the_map_they_see(
    client: httpx.AsyncClient, db: asyncpg.Connection, user: Account, other_user: Account
) -> None:
    show = await make.show(db, 4)
    assert (await reserve(client, user, show, show.seat_ids[:1])).status_code == 201
    path = seat_map(show)
    mine = await client.get(path, headers=user.headers)
    theirs = await client.get(path, headers=other_user.headers)
    anonymous = await client.get(path)
    assert mine.json() != theirs.json() == anonymous.json()
    assert mine.headers["etag"] != theirs.headers["etag"] == anonymous.headers["etag"]
    assert "authorization" in vary(mine)
    # The holder's tag never validates another viewer's map, nor the other way round.
    r = await client.get(
        path, headers={**other_user.headers, "If-None-Match": mine.headers["etag"]}
    )
    assert r.status_code == 200 and r.json() == theirs.json()
    r = await client.get(path, headers={**user.headers, "If-None-Match": theirs.headers["etag"]})
    assert r.status_code == 200 and r.json() == mine.json()
    r = await client.get(path, headers={**user.headers, "If-None-Match": mine.headers["etag"]})
    assert r.status_code == 304


# -- catalog reads --------------------------------------------------------------------------------


async def test_catalog_reads_have_etags_and_answer_304(
    client: httpx.AsyncClient, db: asyncpg.Connection, admin: Account
) -> None:
    movie_id = await make.movie(db, "Heat")
    path = f"/api/v1/movies/{movie_id}"
    first = await client.get(path)
    etag = first.headers["etag"]
    assert first.headers["cache-control"] == "public, max-age=30"
    assert {"origin", "accept-encoding"} <= vary(first)
    again = await client.get(path, headers={"If-None-Match": etag})
    assert (again.status_code, again.content, again.headers["etag"]) == (304, b"", etag)
    assert again.headers["cache-control"] == "public, max-age=30"
    assert (await client.get(path, headers={"If-None-Match": f"W/{etag}"})).status_code == 304
    head = await client.head(path, headers={"If-None-Match": '"nope"'})
    assert (head.status_code, head.headers["etag"], head.content) == (200, etag, b"")
    changed = await client.patch(path, json={"title": "Heat (1995)"}, headers=admin.headers)
    assert changed.status_code == 200
    assert "etag" not in changed.headers and "cache-control" not in changed.headers
    r = await client.get(path, headers={"If-None-Match": etag})
    assert (r.status_code, r.json()["title"]) == (200, "Heat (1995)")
    assert r.headers["etag"] != etag
    # A list, and a route that sets its own Cache-Control (discovery) keeps it.
    for listing in ("/api/v1/movies/", "/api/v1/movies/coming-soon", "/api/v1/cinemas/"):
        r = await client.get(listing)
        assert r.headers["cache-control"] == "public, max-age=30", listing
        r = await client.get(listing, headers={"If-None-Match": r.headers["etag"]})
        assert r.status_code == 304, listing
    missing = await client.get("/api/v1/movies/999999999")
    assert missing.status_code == 404 and "etag" not in missing.headers


async def test_answers_for_a_signed_in_caller_are_private(
    client: httpx.AsyncClient, db: asyncpg.Connection, user: Account
) -> None:
    movie_id = await make.movie(db, "Heat")
    reviews = f"/api/v1/movies/{movie_id}/reviews"
    anonymous = await client.get(reviews)
    assert anonymous.headers["cache-control"] == "public, max-age=30"
    assert "authorization" in vary(anonymous)
    signed_in = await client.get(reviews, headers=user.headers)
    assert signed_in.headers["cache-control"] == "private, no-cache"
    r = await client.get(
        reviews, headers={**user.headers, "If-None-Match": signed_in.headers["etag"]}
    )
    assert r.status_code == 304
    searched = await client.get("/api/v1/movies/search?q=heat", headers=user.headers)
    assert searched.headers["cache-control"] == "private, no-store"  # the route's own decision
    # A public route does not depend on the caller: public even with a token.
    r = await client.get(f"/api/v1/movies/{movie_id}", headers=user.headers)
    assert r.headers["cache-control"] == "public, max-age=30"


# -- CORS still right -----------------------------------------------------------------------------


async def test_cors_preflight_and_vary_origin_on_cached_answers(
    db: asyncpg.Connection, make_server: Any
) -> None:
    live: LiveServer = make_server(cors_origins=FRONTEND)
    show = await make.show(db, 40)
    async with httpx.AsyncClient(base_url=live.url, timeout=15) as c:
        await c.get(seat_map(show))  # loads the screening into Redis
        r = await c.options(
            seat_map(show),
            headers={
                "Origin": FRONTEND,
                "Access-Control-Request-Method": "GET",
                "Access-Control-Request-Headers": "if-none-match",
                "Accept-Encoding": "gzip",
            },
        )
        assert (r.status_code, r.headers["access-control-allow-origin"]) == (200, FRONTEND)
        assert "content-encoding" not in r.headers
        origin = {"Origin": FRONTEND, "Accept-Encoding": "gzip"}
        r = await c.get(seat_map(show), headers=origin)
        assert (r.headers["access-control-allow-origin"], r.headers["content-encoding"]) == (
            FRONTEND,
            "gzip",
        )
        # (Starlette's CORS adds its own "Origin" to a configured origin's answer: said twice,
        # meant once.)
        assert {"origin", "accept-encoding", "authorization"} <= vary(r)
        r = await c.get(seat_map(show), headers={**origin, "If-None-Match": r.headers["etag"]})
        assert (r.status_code, r.headers["access-control-allow-origin"]) == (304, FRONTEND)
        r = await c.get("/api/v1/movies/", headers=origin)
        assert r.headers["access-control-allow-origin"] == FRONTEND
        assert "origin" in vary(r)
        r = await c.post(RESERVE, json={}, headers=origin)
        assert r.status_code in (401, 422)


# -- the parts, in process ------------------------------------------------------------------------


def test_accept_encoding_and_if_none_match_are_parsed_as_rfc_9110_says() -> None:
    assert choose_coding(b"gzip, deflate, br") == "br"
    assert choose_coding(b"gzip;q=0.5, br;q=0") == "gzip"
    assert choose_coding(b"deflate") is None
    assert choose_coding(b"*") == "br"
    assert choose_coding(b"*, br;q=0") == "gzip"
    assert choose_coding(b"GZIP ; q=1.0") == "gzip"
    assert choose_coding(b"gzip;q=bad") is None
    assert matches(b'"a", "b"', b'"b"')
    assert matches(b' W/"b" ', b'"b"')
    assert matches(b"*", b'"b"')
    assert not matches(b'"bb"', b'"b"')
    assert not matches(None, b'"b"')


async def test_a_streamed_answer_is_compressed_chunk_by_chunk_not_buffered() -> None:
    sent: list[dict[str, Any]] = []
    chunks = [b"x" * 2000, b"y" * 2000, b""]

    async def streaming(scope: Any, receive: Any, send: Any) -> None:
        headers = [(b"content-type", b"text/plain"), (b"content-length", b"4000")]
        await send({"type": "http.response.start", "status": 200, "headers": headers})
        for i, chunk in enumerate(chunks):
            await send({"type": "http.response.body", "body": chunk, "more_body": i < 2})
            # Each chunk reached the client before the next was produced, already decodable.
            assert len(sent) == i + 2

    async def collect(message: dict[str, Any]) -> None:
        sent.append(message)

    scope = {"type": "http", "headers": [(b"accept-encoding", b"gzip")]}
    await Compression(streaming)(scope, None, collect)  # type: ignore[arg-type]
    start = dict(sent[0]["headers"])
    assert start[b"content-encoding"] == b"gzip" and b"content-length" not in start
    assert gzip.decompress(b"".join(m["body"] for m in sent[1:])) == b"".join(chunks)
    unpacker = zlib.decompressobj(31)
    assert unpacker.decompress(sent[1]["body"]) == chunks[0]  # flushed: usable at once


async def test_websockets_and_encoded_answers_pass_untouched() -> None:
    seen: list[Any] = []

    async def app(scope: Any, receive: Any, send: Any) -> None:
        seen.append(send)
        if scope["type"] == "http":
            headers = [(b"content-type", b"application/json"), (b"content-encoding", b"br")]
            await send({"type": "http.response.start", "status": 200, "headers": headers})
            await send({"type": "http.response.body", "body": b"\x00" * 5000})

    sent: list[dict[str, Any]] = []

    async def collect(message: dict[str, Any]) -> None:
        sent.append(message)

    async def tagged(scope: Any, receive: Any, send: Any) -> None:
        headers = [(b"content-type", b"text/css"), (b"etag", b'"abc"')]
        await send({"type": "http.response.start", "status": 200, "headers": headers})
        await send({"type": "http.response.body", "body": b"a {}" * 1000})

    br = {"type": "http", "headers": [(b"accept-encoding", b"br")]}
    await Compression(tagged)(br, None, collect)  # type: ignore[arg-type]
    headers = dict(sent[0]["headers"])
    # The tag was made for other bytes: equivalent content, so weak (RFC 9110 8.8.1).
    assert (headers[b"etag"], headers[b"content-encoding"]) == (b'W/"abc"', b"br")
    assert brotli.decompress(sent[1]["body"]) == b"a {}" * 1000
    sent.clear()
    ws = {"type": "websocket", "headers": [(b"accept-encoding", b"gzip")]}
    await Compression(app)(ws, None, collect)  # type: ignore[arg-type]
    assert seen == [collect]
    http = {"type": "http", "headers": [(b"accept-encoding", b"gzip")]}
    await Compression(app)(http, None, collect)  # type: ignore[arg-type]
    assert sent[1]["body"] == b"\x00" * 5000
    assert dict(sent[0]["headers"])[b"content-encoding"] == b"br"


def test_a_map_read_across_a_change_sends_no_etag_and_no_304() -> None:
    """A change between the version read and the map read: the map is newer than its version,
    so the version cannot name it (another process may render the older state under it)."""
    rendered = one_seat_map()
    rendered.exact = False
    scope = {"headers": [(b"if-none-match", b"*")]}
    reply = map_reply(scope, 5, rendered, None)
    assert reply.status == 200 and b"etag" not in dict(reply.headers)
    assert free_reply(scope, 5, rendered).status == 200
    assert map_reply(scope, 5, one_seat_map(), None).status == 304


def one_seat_map() -> Rendered:
    seats = {1: SeatJson(b'{"seat":{"id":1},"status":', b"")}
    details: Any = None
    return Rendered(7, details, NEVER, seats, ["available"], [None], [b"null"], [b"{}"], b"[{}]")
