"""Movie reviews and the like/dislike reactions to them, in PostgreSQL.

Reaction counts are computed on read from ``review_reactions`` (indexed by its primary key), so
they can never disagree with the reactions themselves.
"""

from __future__ import annotations

from typing import Any

import asyncpg

from seatlock.errors import Conflict, NotFound

REVIEW_SELECT = """
SELECT r.id, r.movie_id, r.user_id, u.full_name AS author_name, r.rating, r.title, r.content,
       r.created_at, r.updated_at, x.likes, x.dislikes,
       (SELECT v.reaction FROM review_reactions v WHERE v.review_id = r.id AND v.user_id = $1)
           AS my_reaction
FROM reviews r
JOIN users u ON u.id = r.user_id
CROSS JOIN LATERAL (
    SELECT count(*) FILTER (WHERE rr.reaction = 'like') AS likes,
           count(*) FILTER (WHERE rr.reaction = 'dislike') AS dislikes
    FROM review_reactions rr WHERE rr.review_id = r.id
) x
"""

# "helpful" is likes minus dislikes. Every ordering ends with the id, so pages never overlap.
SORT_EXPRESSIONS = {
    "created_at": "r.created_at",
    "rating": "r.rating",
    "helpful": "(x.likes - x.dislikes)",
}


async def movie_exists(db: asyncpg.Pool, movie_id: int) -> bool:
    return bool(await db.fetchval("SELECT EXISTS (SELECT 1 FROM movies WHERE id = $1)", movie_id))


async def get_review(
    db: asyncpg.Pool, review_id: int, viewer: int | None = None
) -> asyncpg.Record | None:
    """The review with its counts, and ``viewer``'s own reaction (None for anonymous callers)."""
    return await db.fetchrow(REVIEW_SELECT + " WHERE r.id = $2", viewer, review_id)


async def list_reviews(
    db: asyncpg.Pool,
    movie_id: int,
    viewer: int | None,
    *,
    skip: int,
    limit: int,
    sort_by: str,
    order: str,
) -> list[asyncpg.Record]:
    direction = "ASC" if order == "asc" else "DESC"
    key = SORT_EXPRESSIONS[sort_by]
    return await db.fetch(
        REVIEW_SELECT + f" WHERE r.movie_id = $2 ORDER BY {key} {direction}, r.id {direction}"
        " OFFSET $3 LIMIT $4",
        viewer,
        movie_id,
        skip,
        limit,
    )


async def create_review(
    db: asyncpg.Pool, movie_id: int, user_id: int, rating: int, title: str | None, content: str
) -> int:
    """Insert a review; NotFound for an unknown movie, Conflict for a second one by the user."""
    try:
        review_id = await db.fetchval(
            "INSERT INTO reviews (movie_id, user_id, rating, title, content)"
            " SELECT m.id, $2, $3, $4, $5 FROM movies m WHERE m.id = $1 RETURNING id",
            movie_id,
            user_id,
            rating,
            title,
            content,
        )
    except asyncpg.UniqueViolationError:
        raise Conflict("You have already reviewed this movie") from None
    except asyncpg.ForeignKeyViolationError:
        review_id = None  # the movie was deleted while we inserted
    if review_id is None:
        raise NotFound("Movie not found")
    return int(review_id)


async def update_review(
    db: asyncpg.Pool, review_id: int, user_id: int, changes: dict[str, Any]
) -> bool:
    """Apply changes to the user's own review; False when there is no such review of theirs."""
    columns = [c for c in ("rating", "title", "content") if c in changes]
    sets = "".join(f"{c} = ${i}, " for i, c in enumerate(columns, start=3))
    status = await db.execute(
        f"UPDATE reviews SET {sets}updated_at = now() WHERE id = $1 AND user_id = $2",
        review_id,
        user_id,
        *(changes[c] for c in columns),
    )
    return bool(status != "UPDATE 0")


async def delete_review(db: asyncpg.Pool, review_id: int, user_id: int, any_author: bool) -> bool:
    status = await db.execute(
        "DELETE FROM reviews WHERE id = $1 AND (user_id = $2 OR $3)",
        review_id,
        user_id,
        any_author,
    )
    return bool(status != "DELETE 0")


async def set_reaction(db: asyncpg.Pool, review_id: int, user_id: int, reaction: str) -> None:
    """Record, change or ("none") remove the user's reaction; NotFound for an unknown review."""
    if reaction == "none":
        if not await db.fetchval("SELECT EXISTS (SELECT 1 FROM reviews WHERE id = $1)", review_id):
            raise NotFound("Review not found")
        await db.execute(
            "DELETE FROM review_reactions WHERE review_id = $1 AND user_id = $2",
            review_id,
            user_id,
        )
        return
    try:
        await db.execute(
            "INSERT INTO review_reactions (review_id, user_id, reaction) VALUES ($1, $2, $3)"
            " ON CONFLICT (review_id, user_id) DO UPDATE SET reaction = EXCLUDED.reaction",
            review_id,
            user_id,
            reaction,
        )
    except asyncpg.ForeignKeyViolationError:
        raise NotFound("Review not found") from None


async def reaction_counts(db: asyncpg.Pool, review_id: int, user_id: int) -> asyncpg.Record:
    row = await db.fetchrow(
        "SELECT count(*) FILTER (WHERE reaction = 'like') AS likes,"
        " count(*) FILTER (WHERE reaction = 'dislike') AS dislikes,"
        " max(reaction) FILTER (WHERE user_id = $2) AS mine"
        " FROM review_reactions WHERE review_id = $1",
        review_id,
        user_id,
    )
    assert row is not None
    return row


async def summary(db: asyncpg.Pool, movie_id: int) -> asyncpg.Record | None:
    """Count, average (NULL without reviews) and the count of each star, or None: no movie."""
    return await db.fetchrow(
        "SELECT count(r.id) AS count, round(avg(r.rating), 2) AS average,"
        " count(r.id) FILTER (WHERE r.rating = 1) AS r1,"
        " count(r.id) FILTER (WHERE r.rating = 2) AS r2,"
        " count(r.id) FILTER (WHERE r.rating = 3) AS r3,"
        " count(r.id) FILTER (WHERE r.rating = 4) AS r4,"
        " count(r.id) FILTER (WHERE r.rating = 5) AS r5"
        " FROM movies m LEFT JOIN reviews r ON r.movie_id = m.id WHERE m.id = $1 GROUP BY m.id",
        movie_id,
    )
