"""The answer cache of anonymous catalog reads (api/answercache.py), through real HTTP."""

from __future__ import annotations

import asyncio
import time
from collections.abc import AsyncIterator, Callable
from typing import Any

import asyncpg
import httpx
import pytest

from api import answercache
from api.answercache import MAX_ENTRIES, MAX_KEY_BYTES, AnswerCache, Flight
from api.caching import compress
from db import catalog
from tests import factories as make
from tests.support import Account, LiveServer

MOVIES = "/api/v1/movies/?limit=20"
LONG = 60.0  # seconds: a TTL no test outlives, so whatever changes comes from a clear
Start = Callable[..., LiveServer]


@pytest.fixture
def list_calls(monkeypatch: pytest.MonkeyPatch) -> list[int]:
    """Counts the movie list queries the servers run (the real query, counted on the way)."""
    calls: list[int] = []
    real = catalog.list_movies

    async def counted(pool: Any, *args: Any) -> Any:
        calls.append(1)
        await asyncio.sleep(0.05)  # a slow query: concurrent misses overlap for sure
        return await real(pool, *args)

    monkeypatch.setattr(catalog, "list_movies", counted)
    return calls


async def open_client(live: LiveServer, **headers: str) -> httpx.AsyncClient:
    c = httpx.AsyncClient(base_url=live.url, timeout=15)
    del c.headers["accept-encoding"]
    c.headers.update(headers)
    return c


@pytest.fixture
async def cached(make_server: Start) -> AsyncIterator[httpx.AsyncClient]:
    """A client of a server that keeps anonymous catalog answers for LONG seconds."""
    async with await open_client(make_server(catalog_cache_seconds=LONG)) as c:
        yield c


def titles(r: httpx.Response) -> list[str]:
    assert r.status_code == 200, r.text
    return [m["title"] for m in r.json()]


def fixed_headers(r: httpx.Response) -> list[tuple[str, str]]:
    return [(k, v) for k, v in r.headers.multi_items() if k not in ("date", "x-request-id")]


async def test_a_hit_serves_the_same_bytes_and_headers_as_no_cache(
    make_server: Start, db: asyncpg.Connection, list_calls: list[int]
) -> None:
    for i in range(30):  # a body above MIN_SIZE: compressed per coding
        await make.movie(db, f"Movie {i:02d}", description="x" * 40)
    live = make_server(catalog_cache_seconds=LONG)
    off = make_server(catalog_cache_seconds=0)
    for coding in ("", "gzip", "br"):
        extra = {"Accept-Encoding": coding} if coding else {}
        async with await open_client(live, **extra) as c, await open_client(off, **extra) as o:
            first, second, plain = await c.get(MOVIES), await c.get(MOVIES), await o.get(MOVIES)
        assert first.content == second.content == plain.content
        assert fixed_headers(first) == fixed_headers(second) == fixed_headers(plain)
        assert first.headers.get("content-encoding", "") == coding
        assert first.headers["cache-control"] == "public, max-age=30"
    # Once on the cached server (each coding is made from the kept body), each time without.
    assert len(list_calls) == 1 + 3


async def test_a_row_changed_behind_the_cache_shows_after_the_ttl(
    make_server: Start, db: asyncpg.Connection, list_calls: list[int]
) -> None:
    movie_id = await make.movie(db, "Heat")
    ttl = 1.0
    async with await open_client(make_server(catalog_cache_seconds=ttl)) as c:
        read_at = time.monotonic()
        assert titles(await c.get(MOVIES)) == ["Heat"]
        await db.execute("UPDATE movies SET title = 'Ronin' WHERE id = $1", movie_id)
        again = await c.get(MOVIES)
        if time.monotonic() - read_at < ttl:  # a slow machine may take longer than the TTL
            assert titles(again) == ["Heat"]
            assert len(list_calls) == 1
        await asyncio.sleep(max(0.0, read_at + ttl + 0.05 - time.monotonic()))
        assert titles(await c.get(MOVIES)) == ["Ronin"]


async def test_an_admin_write_clears_the_cache_at_once(
    cached: httpx.AsyncClient, db: asyncpg.Connection, admin: Account, list_calls: list[int]
) -> None:
    movie_id = await make.movie(db, "Heat")
    assert titles(await cached.get(MOVIES)) == ["Heat"]
    await db.execute("UPDATE movies SET title = 'Ronin' WHERE id = $1", movie_id)
    assert titles(await cached.get(MOVIES)) == ["Heat"]  # kept: the write bypassed the API
    assert len(list_calls) == 1
    patch = {"description": "A heist"}
    r = await cached.patch(f"/api/v1/movies/{movie_id}", json=patch, headers=admin.headers)
    assert r.status_code == 200
    assert titles(await cached.get(MOVIES)) == ["Ronin"]
    assert len(list_calls) == 2
    created = await cached.post(
        "/api/v1/movies/", json={"title": "Alien", "duration_minutes": 117}, headers=admin.headers
    )
    assert created.status_code == 201
    assert titles(await cached.get(MOVIES)) == ["Ronin", "Alien"]


async def test_other_catalog_writes_clear_the_cache(
    cached: httpx.AsyncClient, db: asyncpg.Connection, admin: Account, user: Account
) -> None:
    movie_id = await make.movie(db, "Heat")
    assert (await cached.get("/api/v1/cinemas/")).json() == []
    cinema = {"name": "Rex", "address": "1 Main St", "city": "Paris"}
    r = await cached.post("/api/v1/cinemas/", json=cinema, headers=admin.headers)
    assert r.status_code == 201, r.text
    assert [c["name"] for c in (await cached.get("/api/v1/cinemas/")).json()] == ["Rex"]
    reviews = f"/api/v1/movies/{movie_id}/reviews"
    assert (await cached.get(reviews)).json() == []
    review = {"rating": 5, "title": "Great", "content": "A fine heist film."}
    assert (await cached.post(reviews, json=review, headers=user.headers)).status_code == 201
    assert len((await cached.get(reviews)).json()) == 1  # a user's review: a catalog write too


async def test_signed_in_reads_bypass_the_cache(
    cached: httpx.AsyncClient, db: asyncpg.Connection, user: Account, list_calls: list[int]
) -> None:
    movie_id = await make.movie(db, "Heat")
    assert titles(await cached.get(MOVIES)) == ["Heat"]
    await db.execute("UPDATE movies SET title = 'Ronin' WHERE id = $1", movie_id)
    for _ in range(2):
        r = await cached.get(MOVIES, headers=user.headers)
        assert titles(r) == ["Ronin"]
        assert r.headers["cache-control"] == "public, max-age=30"  # a public route: same policy
    assert titles(await cached.get(MOVIES)) == ["Heat"]  # and the anonymous copy is untouched
    assert len(list_calls) == 3


async def test_concurrent_misses_share_one_query(
    cached: httpx.AsyncClient, db: asyncpg.Connection, list_calls: list[int]
) -> None:
    for title in ("Heat", "Ronin", "Alien"):
        await make.movie(db, title)
    answers = await asyncio.gather(*(cached.get(MOVIES) for _ in range(50)))
    assert {r.status_code for r in answers} == {200}
    assert len({r.content for r in answers}) == 1
    assert len({r.headers["etag"] for r in answers}) == 1
    assert titles(answers[0]) == ["Heat", "Ronin", "Alien"]
    assert len(list_calls) == 1


async def test_revalidation_answers_304_from_the_cache(
    cached: httpx.AsyncClient, db: asyncpg.Connection, list_calls: list[int]
) -> None:
    await make.movie(db, "Heat")
    first = await cached.get(MOVIES)
    etag = first.headers["etag"]
    for tag in (etag, f'"other", W/{etag}', "*"):
        r = await cached.get(MOVIES, headers={"If-None-Match": tag})
        assert r.status_code == 304
        assert r.content == b""
        assert r.headers["etag"] == etag
        assert r.headers["cache-control"] == "public, max-age=30"
    assert (await cached.get(MOVIES, headers={"If-None-Match": '"other"'})).status_code == 200
    assert len(list_calls) == 1


async def test_errors_and_other_queries_are_not_shared(
    cached: httpx.AsyncClient, db: asyncpg.Connection, list_calls: list[int]
) -> None:
    await make.movie(db, "Heat")
    missing = await asyncio.gather(*(cached.get("/api/v1/movies/987654321") for _ in range(10)))
    assert {r.status_code for r in missing} == {404}  # each waiter made its own answer
    for _ in range(2):
        assert (await cached.get("/api/v1/movies/987654321")).status_code == 404
        assert (await cached.get("/api/v1/movies/?limit=0")).status_code == 422
    assert titles(await cached.get(MOVIES)) == ["Heat"]
    assert titles(await cached.get("/api/v1/movies/?limit=5")) == ["Heat"]
    assert len(list_calls) == 2  # one per query string


async def test_the_cache_is_bounded_and_a_clear_stops_running_flights() -> None:
    answers = AnswerCache(LONG)
    for i in range(MAX_ENTRIES + 10):
        key = ("GET", f"/m/{i}", b"")
        Flight(answers, key, answers.generation).keep(200, b"{}", [])
    assert len(answers.answers) == MAX_ENTRIES
    assert answers.fresh(("GET", "/m/0", b"")) is None  # the least recently used went first
    assert answers.fresh(("GET", f"/m/{MAX_ENTRIES + 9}", b"")) is not None
    late = Flight(answers, ("GET", "/late", b""), answers.generation)
    answers.clear()
    assert late.keep(200, b"{}", []) is not None  # it still answers its own requests
    assert answers.fresh(("GET", "/late", b"")) is None  # but keeps nothing after a write
    assert answers.bytes == 0


async def test_compressed_copies_count_toward_the_byte_bound(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    answers = AnswerCache(LONG)
    # A catalog list: compressible, but not to nothing (each entry differs).
    body = (
        b"["
        + b",".join(b'{"id":%d,"title":"Movie %x"}' % (i, i * 7919) for i in range(3000))
        + b"]"
    )
    gzipped, brotli = len(compress(body, "gzip")), len(compress(body, "br"))
    first = Flight(answers, ("GET", "/m/1", b""), answers.generation).keep(200, body, [])
    assert first is not None and answers.bytes == len(body)
    await first.variant(None)
    await first.variant("gzip")
    await first.variant("gzip")  # made once, counted once
    await first.variant("br")
    assert answers.bytes == len(body) + gzipped + brotli
    # Room for a second body, not for its copies too: storing it keeps both, its gzip copy
    # pushes the first answer out.
    monkeypatch.setattr(answercache, "MAX_BYTES", 2 * len(body) + gzipped + brotli + gzipped // 2)
    second = Flight(answers, ("GET", "/m/2", b""), answers.generation).keep(200, body, [])
    assert second is not None and len(answers.answers) == 2
    await second.variant("gzip")
    assert list(answers.answers) == [("GET", "/m/2", b"")]
    assert answers.bytes == len(body) + gzipped
    await first.variant("br")  # a dropped answer's copies count no more
    answers.clear()
    await second.variant("br")
    assert answers.bytes == 0


async def test_an_answer_to_a_long_query_is_served_but_not_kept(
    cached: httpx.AsyncClient, db: asyncpg.Connection, list_calls: list[int]
) -> None:
    """The lists ignore unknown parameters: a query string of junk is a 200 like any other,
    and kept, it made each entry's key as long as a request head (64 KB)."""
    await make.movie(db, "Heat")
    junk = "/api/v1/movies/?limit=20&junk=" + "x" * MAX_KEY_BYTES
    for _ in range(2):
        assert titles(await cached.get(junk)) == ["Heat"]
    assert len(list_calls) == 2  # not kept: asked again
    for _ in range(2):
        assert titles(await cached.get(MOVIES)) == ["Heat"]
    assert len(list_calls) == 3  # a short one is
