"""Search on a PostgreSQL without pg_trgm (the pgserver package's, the embedded fallback).

Every migration must run there, and movie search must give exactly what it gives with pg_trgm:
the same films, tiers and scores in the same order (db/migrations/0009_trigram_fallback.sql).
"""

from __future__ import annotations

import itertools
import random
import shutil
import tempfile
import time
from collections.abc import AsyncIterator, Iterator
from pathlib import Path
from typing import Any

import asyncpg
import httpx
import pytest

from db.discovery import MovieFilters, search_movies
from db.migrate import migrate, migration_files
from seatlock.server.embedded import EmbeddedPostgres, pgserver_bin
from tests import factories as make
from tests.api.test_search import ADJECTIVES, NOUNS, generated_movies

# tests/api/test_search.py's queries, and more typos.
QUERIES = [
    "shawshenk", "Shawshank Redemption", "shawshank redemtion", "silent harbor", "darabont",
    "heat", "heatt", "casablanka", "don't look", "the", "!!!", "a & b | !c", "100%", "ü",
    "golden empir", "brokn prison", "harbour", "wintr station 3", "strase",
]  # fmt: skip
SORTS = [("relevance", None), ("title", "desc")]
COUNT = "SELECT count(*) FROM movies"


@pytest.fixture(scope="module")
def pgserver_url() -> Iterator[str]:
    """A PostgreSQL from pgserver's binaries, every migration applied."""
    bindir = pgserver_bin()
    if bindir is None:
        pytest.skip("the pgserver package is not installed")
    root = Path(tempfile.mkdtemp(prefix="seatlock-pgserver-"))  # outside pytest's 0700 tmp root
    server = EmbeddedPostgres(root / "postgres" / "data", persistent=False, bindir=bindir)
    try:
        url = server.start()
        yield url
    finally:
        server.stop()
        shutil.rmtree(root, ignore_errors=True)


@pytest.fixture
async def bare(pgserver_url: str) -> AsyncIterator[asyncpg.Connection]:
    conn = await asyncpg.connect(pgserver_url)
    await migrate(conn)
    await conn.execute("TRUNCATE movies CASCADE")
    yield conn
    await conn.close()


async def extensions(conn: asyncpg.Connection) -> set[str]:
    return {r["extname"] for r in await conn.fetch("SELECT extname FROM pg_extension")}


async def test_every_migration_runs_without_pg_trgm(bare: asyncpg.Connection) -> None:
    assert "pg_trgm" not in await extensions(bare)
    assert not await bare.fetchval(
        "SELECT EXISTS (SELECT 1 FROM pg_available_extensions WHERE name = 'pg_trgm')"
    )
    done = await bare.fetch("SELECT version FROM schema_migrations ORDER BY version")
    assert [r["version"] for r in done] == [p.stem for p in migration_files()]
    indexes = {r["indexname"] for r in await bare.fetch("SELECT indexname FROM pg_indexes")}
    assert "movies_search_idx" in indexes
    assert "movies_title_trgm_idx" not in indexes
    assert await bare.fetchval("SELECT word_similarity('word', 'two words')") == pytest.approx(0.8)


async def test_a_database_with_pg_trgm_keeps_its_trigram_indexes(db: asyncpg.Connection) -> None:
    if "pg_trgm" not in await extensions(db):
        pytest.skip("the test PostgreSQL has no pg_trgm")
    indexes = {r["indexname"] for r in await db.fetch("SELECT indexname FROM pg_indexes")}
    assert {"movies_title_trgm_idx", "cinemas_name_trgm_idx"} <= indexes
    # pg_trgm's own functions, not the fallback's (which exists here only to be compared).
    owner = await db.fetchval(
        "SELECT e.extname FROM pg_depend d JOIN pg_extension e ON e.oid = d.refobjid"
        " WHERE d.objid = 'word_similarity(text, text)'::regprocedure AND d.deptype = 'e'"
    )
    assert owner == "pg_trgm"


def typo(rng: random.Random, word: str) -> str:
    i = rng.randrange(len(word))
    edits = [word[:i] + word[i + 1 :], word[:i] + rng.choice("aeiouxyz") + word[i:], word.upper()]
    return rng.choice(edits)


def tricky_pairs(count: int = 3000) -> list[tuple[str, str]]:
    """Queries and titles with typos, repeats, punctuation, digits and non-ASCII letters."""
    rng = random.Random(14)
    words = [w.lower() for w in ADJECTIVES + NOUNS] + [
        "über", "straße", "café", "naïve", "ÉTÉ", "banana", "bananas", "aaaa", "a", "x1", "2049",
    ]  # fmt: skip
    seps = [" ", "  ", "-", ": ", "'", ", ", "_", "!", "/"]
    pairs = [("", "x"), ("x", ""), ("!!!", "a b"), ("aaaa aaaa", "aaaaaaaa aa"), ("ab", "ab ab")]
    for _ in range(count):
        title = rng.choice(seps).join(rng.choice(words) for _ in range(rng.randint(1, 7)))
        picked = rng.sample(title.split(" "), k=min(len(title.split(" ")), rng.randint(1, 3)))
        query = " ".join(typo(rng, w) if w and rng.random() < 0.5 else w for w in picked)
        pairs.append((query, title))
    return pairs


async def test_word_similarity_equals_pg_trgms(db: asyncpg.Connection) -> None:
    if "pg_trgm" not in await extensions(db):
        pytest.skip("the test PostgreSQL has no pg_trgm to compare with")
    pairs = tricky_pairs()
    differ = await db.fetch(
        "SELECT q, t, word_similarity(q, t) AS want, seatlock_word_similarity(q, t) AS got"
        " FROM unnest($1::text[], $2::text[]) AS p (q, t)"
        " WHERE word_similarity(q, t) IS DISTINCT FROM seatlock_word_similarity(q, t)",
        [q for q, _ in pairs],
        [t for _, t in pairs],
    )
    assert [dict(r) for r in differ] == []
    matches = await db.fetchval(
        "SELECT count(*) FROM unnest($1::text[], $2::text[]) AS p (q, t)"
        " WHERE word_similarity(q, t) >= 0.5",
        [q for q, _ in pairs],
        [t for _, t in pairs],
    )
    assert len(pairs) / 10 < matches < len(pairs)  # both sides of the threshold were compared


async def test_the_operator_reads_the_threshold_like_pg_trgms(bare: asyncpg.Connection) -> None:
    check = "SELECT 'two words' %> 'word'"  # word_similarity('word', 'two words') = 0.8
    assert await bare.fetchval(check) is True  # pg_trgm's default threshold: 0.6
    async with bare.transaction():
        await bare.execute("SET LOCAL pg_trgm.word_similarity_threshold = 0.81")
        assert await bare.fetchval(check) is False
    async with bare.transaction():
        await bare.execute("SET LOCAL pg_trgm.word_similarity_threshold = 0.8")
        assert await bare.fetchval(check) is True


async def load_catalog(conn: asyncpg.Connection) -> None:
    await conn.copy_records_to_table(
        "movies",
        records=generated_movies(1000),
        columns=["title", "description", "duration_minutes", "genre", "language"],
    )
    await make.movie(
        conn,
        "The Shawshank Redemption",
        description="Two imprisoned men bond over a number of years.",
        director="Frank Darabont",
        genre="Drama",
        rating=9.3,
    )
    for title, fields in [
        ("Heat", {}),
        ("Cold", {"genre": "Heat"}),
        ("Warm", {"description": "the heat of summer"}),
        ("Heath Story", {}),
        ("Casablanca", {"genre": "Romance"}),
        ("Don't Look Up", {}),
        ("Über Straße", {"description": "a café in the ÉTÉ"}),
    ]:
        await make.movie(conn, title, **fields)
    await conn.execute("ANALYZE movies")


async def search(url: str, q: str, sort_by: str, order: str | None) -> list[tuple[Any, ...]]:
    pool = await asyncpg.create_pool(url, min_size=1, max_size=1)
    try:
        rows = await search_movies(pool, q, MovieFilters(), sort_by, order, 0, 50)
    finally:
        await pool.close()
    return [(r["title"], r["tier"], r["score"]) for r in rows]


async def test_search_finds_the_same_as_with_pg_trgm(
    db: asyncpg.Connection,
    bare: asyncpg.Connection,
    backend_urls: tuple[str, str],
    pgserver_url: str,
) -> None:
    if "pg_trgm" not in await extensions(db):
        pytest.skip("the test PostgreSQL has no pg_trgm to compare with")
    await load_catalog(db)
    await load_catalog(bare)
    fuzzy, slowest = 0, 0.0
    for q, (sort_by, order) in itertools.product(QUERIES, SORTS):
        want = await search(backend_urls[1], q, sort_by, order)
        started = time.perf_counter()
        got = await search(pgserver_url, q, sort_by, order)
        slowest = max(slowest, time.perf_counter() - started)
        assert got == want, (q, sort_by, order)
        fuzzy += sum(1 for _, tier, _ in want if tier == 1)
    assert fuzzy > 20  # the typo-tolerant tier was exercised, not only full text
    print(f"slowest search without pg_trgm among {await bare.fetchval(COUNT)}: {slowest:.3f} s")


async def test_the_whole_app_runs_on_pgserver(
    pgserver_url: str, bare: asyncpg.Connection, make_server: Any
) -> None:
    """The embedded fallback on a machine with no system PostgreSQL: holds, bookings, tickets
    and typo-tolerant search through real HTTP, on pgserver's PostgreSQL."""
    server = make_server(database_url=pgserver_url)
    show = await make.show(bare, 4)
    await make.movie(bare, "The Shawshank Redemption")
    [headers] = await make.sessions(bare, server.settings.jwt_secret, 1)
    seats = show.seat_ids[:2]
    async with httpx.AsyncClient(base_url=server.url) as client:
        body = {"screening_id": show.id, "seat_ids": seats}
        held = await client.post("/api/v1/seat-reservations/reserve", json=body, headers=headers)
        assert held.status_code == 201, held.text
        booked = await client.post(
            "/api/v1/tickets/book-from-reservation",
            json={**body, "payment_id": "pay-pgserver-1"},
            headers=headers,
        )
        assert booked.status_code == 201, booked.text
        mine = await client.get("/api/v1/tickets/my-tickets", headers=headers)
        assert mine.status_code == 200 and len(mine.json()) == 2
        found = await client.get("/api/v1/movies/search", params={"q": "shawshenk"})
        assert found.status_code == 200, found.text
        assert "The Shawshank Redemption" in found.text
