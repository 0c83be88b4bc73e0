"""Movie search: ranked full-text first, trigram typo tolerance second, at catalog scale."""

from __future__ import annotations

import itertools
import random

import asyncpg
import httpx

from db.discovery import TEXT_QUERY, WORD_SIMILARITY, MovieFilters, Where, filter_movies, search_sql
from tests import factories as make
from tests.support import PUBLIC, Account, ids

URL = "/api/v1/movies/search"
ADJECTIVES = str.split(
    "Dark Silent Golden Broken Hidden Last Lost Wild Crimson Frozen Eternal Savage Secret"
    " Burning Midnight Iron Hollow Distant Silver Bitter Brave Fallen Quiet Scarlet"
)
NOUNS = str.split(
    "River Empire Garden Prison Kingdom Shadow Horizon Storm Island Harbor Witness Voyage"
    " Legacy Mountain Winter Station Promise Frontier Mirror Desert Forest Circus Engine Tide"
)
ENDINGS = str.split("Returns Rising Falls Awakens Reborn Forever Begins Ends Again Story")


def generated_movies(count: int) -> list[tuple[str, str, int, str, str]]:
    rng = random.Random(7)
    combos = itertools.product(ADJECTIVES, NOUNS, ENDINGS, range(1, 10))
    rows = []
    for adjective, noun, ending, part in itertools.islice(combos, count):
        title = f"The {adjective} {noun} {ending}" + (f" {part}" if part > 1 else "")
        description = f"A {rng.choice(ADJECTIVES).lower()} tale of a {rng.choice(NOUNS).lower()}."
        rows.append((title, description, rng.randint(80, 180), rng.choice(GENRES), "en"))
    return rows


GENRES = ["Drama", "Action", "Comedy", "Thriller", "Horror"]


async def load_catalog(db: asyncpg.Connection, count: int = 20_000) -> int:
    await db.copy_records_to_table(
        "movies",
        records=generated_movies(count),
        columns=["title", "description", "duration_minutes", "genre", "language"],
    )
    shawshank = await make.movie(
        db,
        "The Shawshank Redemption",
        description="Two imprisoned men bond over a number of years.",
        director="Frank Darabont",
        genre="Drama",
    )
    await db.execute("ANALYZE movies")
    return shawshank


async def test_typos_and_exact_titles_among_20000_movies(
    client: httpx.AsyncClient, db: asyncpg.Connection
) -> None:
    shawshank = await load_catalog(db)
    assert await db.fetchval("SELECT count(*) FROM movies") == 20_001
    r = await client.get(URL, params={"q": "shawshenk"})
    assert ids(r)[0] == shawshank
    assert r.json()[0]["match"] == "fuzzy"
    r = await client.get(URL, params={"q": "Shawshank Redemption"})
    assert ids(r)[0] == shawshank
    assert r.json()[0]["match"] == "text"
    r = await client.get(URL, params={"q": "shawshank redemtion"})
    assert ids(r)[0] == shawshank
    # A common word matches thousands of films: pages stay short and ordered.
    r = await client.get(URL, params={"q": "silent harbor", "limit": 20})
    hits = r.json()
    assert len(hits) == 20
    assert all("silent harbor" in h["title"].lower() for h in hits)
    assert [h["relevance"] for h in hits] == sorted((h["relevance"] for h in hits), reverse=True)
    r = await client.get(URL, params={"q": "darabont"})  # director, weight B
    assert ids(r) == [shawshank]
    await assert_uses_indexes(db, "shawshenk")


async def assert_uses_indexes(db: asyncpg.Connection, q: str) -> None:
    sql, args = search_sql(q, MovieFilters(), "relevance", None, 0, 50)
    async with db.transaction():
        await db.execute(f"SET LOCAL pg_trgm.word_similarity_threshold = {WORD_SIMILARITY}")
        plan = "\n".join(r[0] for r in await db.fetch(f"EXPLAIN {sql}", *args))
    assert "movies_search_idx" in plan, plan
    if await db.fetchval("SELECT EXISTS (SELECT 1 FROM pg_extension WHERE extname = 'pg_trgm')"):
        assert "movies_title_trgm_idx" in plan, plan
        assert "Seq Scan on movies" not in plan, plan
    # Without pg_trgm (db/migrations/0009_trigram_fallback.sql) the typo tier reads every title.


# Every hit of a query joined to its movie, then filtered, sorted and cut to the page: what a
# search's page must equal, however search_sql gets there (it cuts the hits before the join).
EVERY_HIT = (
    "WITH fts AS (SELECT m.id, ts_rank(m.search_vector, {tsq}, 1) AS score FROM movies m"
    " WHERE m.search_vector @@ {tsq}),"
    " fuzzy AS (SELECT m.id, word_similarity(lower($1), lower(m.title)) AS score FROM movies m"
    " WHERE lower(m.title) %> lower($1) AND m.id NOT IN (SELECT id FROM fts))"
    " SELECT m.id, h.tier, h.score FROM (SELECT id, 0 AS tier, score FROM fts"
    " UNION ALL SELECT id, 1, score FROM fuzzy) h JOIN movies m ON m.id = h.id"
    " WHERE {where} ORDER BY {order}"
).replace("{tsq}", TEXT_QUERY.format(q="$1"))
ORDERS = {
    ("relevance", None): "h.tier ASC, h.score DESC, m.id",
    ("relevance", "asc"): "h.tier DESC, h.score ASC, m.id",
    ("title", None): "lower(m.title) ASC, m.id",
    ("rating", None): "m.rating DESC NULLS LAST, m.id",
    ("release_date", "asc"): "m.release_date ASC NULLS LAST, m.id",
}


async def test_a_page_of_hits_is_the_page_of_every_hit_sorted(db: asyncpg.Connection) -> None:
    await load_catalog(db, 3000)
    await db.execute(
        "UPDATE movies SET rating = CASE WHEN id % 7 = 0 THEN NULL ELSE (id % 50) / 5.0 END,"
        " release_date = CASE WHEN id % 5 = 0 THEN NULL"
        " ELSE date '2020-01-01' + (id % 400)::int END"
    )
    pages = [(0, 20), (10, 20), (0, 200), (75, 10)]
    checked = 0
    for q, genre, (sort, order), (skip, limit) in itertools.product(
        ["silent", "silent harbor", "shawshenk", "harbr", "the"],
        [None, "Drama"],
        ORDERS,
        pages,
    ):
        filters = MovieFilters(genre=genre)
        sql, args = search_sql(q, filters, sort, order, skip, limit)
        where = Where(args=[q])
        filter_movies(where, filters)
        every = EVERY_HIT.format(where=where.sql, order=ORDERS[sort, order])
        async with db.transaction():
            await db.execute(f"SET LOCAL pg_trgm.word_similarity_threshold = {WORD_SIMILARITY}")
            got = [(r["id"], r["tier"], r["score"]) for r in await db.fetch(sql, *args)]
            want = [tuple(r) for r in await db.fetch(every, *where.args)][skip : skip + limit]
        assert got == want, (q, genre, sort, order, skip, limit)
        checked += bool(want)
    assert checked > 100  # most of them have hits


async def test_lists_sorted_by_title_or_date_read_a_page_from_an_index(
    db: asyncpg.Connection,
) -> None:
    await load_catalog(db, 3000)
    for sort, order, index in (
        ("title", "asc", "movies_title_idx"),
        ("title", "desc", "movies_title_idx"),
        ("release_date", "asc", "movies_release_date_idx"),
        ("release_date", "desc", "movies_release_date_desc_idx"),
        ("rating", "desc", "movies_rating_idx"),
    ):
        sql, args = search_sql(None, MovieFilters(), sort, order, 40, 20)
        plan = "\n".join(r[0] for r in await db.fetch(f"EXPLAIN {sql}", *args))
        assert index in plan and "Seq Scan" not in plan, (sort, order, plan)


async def test_full_text_ranks_above_fuzzy_and_by_weight(
    client: httpx.AsyncClient, db: asyncpg.Connection
) -> None:
    in_title = await make.movie(db, "Heat")
    in_genre = await make.movie(db, "Cold", genre="Heat")
    in_description = await make.movie(db, "Warm", description="the heat of summer")
    fuzzy = await make.movie(db, "Heath Story")
    await make.movie(db, "Unrelated")
    r = await client.get(URL, params={"q": "heat"})
    assert ids(r) == [in_title, in_genre, in_description, fuzzy]
    assert [m["match"] for m in r.json()] == ["text", "text", "text", "fuzzy"]
    r = await client.get(URL, params={"q": "heatt"})
    assert set(ids(r)) == {in_title, fuzzy}
    assert {m["match"] for m in r.json()} == {"fuzzy"}


async def test_query_is_required_and_validated(client: httpx.AsyncClient) -> None:
    for params in ({}, {"q": ""}, {"q": "   "}, {"q": "a\x00b"}, {"q": "x" * 201}):
        r = await client.get(URL, params=params)
        assert r.status_code == 422, (params, r.text)
        assert "detail" in r.json()


async def test_odd_queries_do_not_break(client: httpx.AsyncClient, db: asyncpg.Connection) -> None:
    movie = await make.movie(db, "Don't Look Up")
    for q in ("the", "!!!", "'", '"unclosed', "a & b | !c", "don't", "-look", "100%", "ü"):
        r = await client.get(URL, params={"q": q})
        assert r.status_code == 200, (q, r.text)
    assert movie in ids(await client.get(URL, params={"q": "don't look"}))


async def test_signed_in_searches_are_recorded(
    client: httpx.AsyncClient, db: asyncpg.Connection, user: Account
) -> None:
    await make.movie(db, "Heat")
    r = await client.get(URL, params={"q": "  heat "}, headers=user.headers)
    assert r.status_code == 200
    r = await client.get(URL, params={"q": "heat", "skip": 50}, headers=user.headers)
    assert r.status_code == 200  # the next page of the same search
    assert "public" not in r.headers["cache-control"]
    r = await client.get(
        "/api/v1/movies/advanced-search", params={"q": "crime", "genre": "x"}, headers=user.headers
    )
    assert r.status_code == 200
    await client.get("/api/v1/movies/advanced-search", params={"genre": "x"}, headers=user.headers)
    r = await client.get(URL, params={"q": "anonymous"})
    assert r.headers["cache-control"] == PUBLIC
    rows = await db.fetch("SELECT user_id, query FROM search_history ORDER BY id")
    assert [(r["user_id"], r["query"]) for r in rows] == [(user.id, "heat"), (user.id, "crime")]
    bad = {"Authorization": "Bearer not-a-token"}
    assert (await client.get(URL, params={"q": "heat"}, headers=bad)).status_code == 401


async def test_search_follows_catalog_changes(
    client: httpx.AsyncClient, db: asyncpg.Connection
) -> None:
    movie = await make.movie(db, "Working Title", genre="Drama")
    await db.execute(
        "UPDATE movies SET title = 'Casablanca', genre = 'Romance' WHERE id = $1", movie
    )
    assert ids(await client.get(URL, params={"q": "casablanca"})) == [movie]
    assert ids(await client.get(URL, params={"q": "casablanka"})) == [movie]
    assert ids(await client.get(URL, params={"q": "romance"})) == [movie]
    assert ids(await client.get(URL, params={"q": "working"})) == []
    assert ids(await client.get(URL, params={"q": "drama"})) == []
