"""Seed data and the books of ``seatlock bench``, straight in PostgreSQL.

The bench measures seat traffic, not the catalog routes, so the rooms, screenings and users it
needs are written with COPY in one transaction; the books are read back the same way.
"""

from __future__ import annotations

import datetime as dt
import random
from dataclasses import dataclass, field

import asyncpg

PASSWORD = "Bench-pass-1!"
HOT_ROWS, HOT_PER_ROW = 20, 25  # the 500-seat hot room
SPREAD_ROWS, SPREAD_PER_ROW = 12, 25
SCREENING_GAP = dt.timedelta(hours=3)
CROWD_PER_ROW = 25
# The words of the browsing part's movie titles and descriptions: a search for one of them
# finds many of the seeded movies, as a search for "star" or "love" does in a real catalog.
WORDS = (
    "star",
    "night",
    "love",
    "war",
    "dark",
    "city",
    "last",
    "little",
    "great",
    "secret",
    "lost",
    "king",
    "river",
    "summer",
    "house",
    "road",
    "winter",
    "island",
    "shadow",
    "heart",
    "fire",
    "blue",
    "storm",
    "garden",
    "ghost",
    "silver",
    "iron",
    "golden",
    "wild",
    "queen",
)
GENRES = ("Action", "Comedy", "Drama", "Horror", "Romance", "Sci-Fi", "Thriller", "Animation")


@dataclass
class Seeded:
    hot_seats: list[int]
    spread_seats: list[int]
    hold_screening: int
    redis_screening: int
    ws_screenings: list[int]
    expiry_screening: int
    hot_screenings: list[int]
    spread_screenings: list[int]
    user_ids: list[int]
    crowd_screening: int = 0  # the release-day crowd's screening, in a room of its own
    crowd_seats: list[int] = field(default_factory=list)
    crowd_user_ids: list[int] = field(default_factory=list)  # the crowd's users, none else's


def bench_email(user_id: int) -> str:
    return f"bench-{user_id}@bench.invalid"


async def seed_catalog(
    database_url: str, duration: float, users: int, crowd_users: int = 0, crowd_seats: int = 0
) -> Seeded:
    from seatlock.accounts.passwords import hash_password

    conn = await asyncpg.connect(database_url)
    try:
        async with conn.transaction():
            hashed = await hash_password(PASSWORD, 4)
            user_ids = await seed_users(conn, users + crowd_users, hashed)
            hot_room, hot_seats = await seed_room(conn, "Hot", HOT_ROWS, HOT_PER_ROW)
            spread_room, spread_seats = await seed_room(conn, "Spread", SPREAD_ROWS, SPREAD_PER_ROW)
            movie = await conn.fetchval(
                "INSERT INTO movies (title, duration_minutes, genre) VALUES"
                " ('Release Day', 120, 'Action') RETURNING id"
            )
            hot_count = 5 + screenings_needed(duration, 1500, len(hot_seats))
            spread_count = screenings_needed(duration, 5000, len(spread_seats))
            hot = await seed_screenings(conn, movie, hot_room, hot_count)
            spread = await seed_screenings(conn, movie, spread_room, max(8, spread_count))
            crowd, crowd_seat_ids = 0, list[int]()
            if crowd_seats:
                rows = -(-crowd_seats // CROWD_PER_ROW)
                crowd_room, crowd_seat_ids = await seed_room(conn, "Crowd", rows, CROWD_PER_ROW)
                crowd_seat_ids = crowd_seat_ids[:crowd_seats]
                await conn.execute(
                    "DELETE FROM seats WHERE room_id = $1 AND NOT id = ANY($2::bigint[])",
                    crowd_room,
                    crowd_seat_ids,
                )
                crowd = (await seed_screenings(conn, movie, crowd_room, 1))[0]
    finally:
        await conn.close()
    return Seeded(
        hot_seats,
        spread_seats,
        hot[0],
        hot[1],
        hot[2:4],
        hot[4],
        hot[5:],
        spread,
        user_ids[:users],
        crowd,
        crowd_seat_ids,
        user_ids[users:],
    )


async def seed_movies(database_url: str, count: int) -> None:
    """``count`` movies more (titles and descriptions from WORDS), for the browsing part's
    search; the catalog's triggers index each row for full-text search as it is copied."""
    rng = random.Random(1)
    rows = [movie_row(rng, n) for n in range(count)]
    conn = await asyncpg.connect(database_url)
    try:
        await conn.copy_records_to_table(
            "movies",
            records=rows,
            columns=["title", "description", "duration_minutes", "genre", "director"],
        )
        await conn.execute("ANALYZE movies")
    finally:
        await conn.close()


def movie_row(rng: random.Random, n: int) -> tuple[str, str, int, str, str]:
    title = " ".join(rng.sample(WORDS, rng.randint(1, 3))).title()
    description = " ".join(rng.choices(WORDS, k=12)).capitalize() + "."
    director = f"{rng.choice(WORDS).title()} {rng.choice(WORDS).title()}son"
    return f"{title} {n}", description, rng.randint(80, 180), rng.choice(GENRES), director


def screenings_needed(duration: float, target_per_s: int, seats: int) -> int:
    """Enough seats that the booking workloads cannot run out below twice the target rate."""
    return max(2, int(2 * target_per_s * duration) // seats + 1)


async def seed_users(conn: asyncpg.Connection, count: int, hashed: str) -> list[int]:
    first = await conn.fetchval("SELECT coalesce(max(id), 0) + 1 FROM users")
    rows = [(bench_email(first + i), hashed, f"Bench user {i}") for i in range(count)]
    await conn.copy_records_to_table(
        "users", records=rows, columns=["email", "password_hash", "full_name"]
    )
    fetched = await conn.fetch("SELECT id, email FROM users WHERE email LIKE 'bench-%'")
    by_email = {r["email"]: r["id"] for r in fetched}
    ids = sorted(by_email.values())
    # The login e-mail must name the real id (identity values need not start where we guessed):
    # bench_email in SQL, one statement for tens of thousands of users.
    await conn.execute(
        "UPDATE users SET email = 'bench-' || id || '@bench.invalid'"
        " WHERE email LIKE 'bench-%' AND email <> 'bench-' || id || '@bench.invalid'"
    )
    return ids


async def seed_room(
    conn: asyncpg.Connection, name: str, rows: int, per_row: int
) -> tuple[int, list[int]]:
    cinema = await conn.fetchval(
        "INSERT INTO cinemas (name, city) VALUES ($1, 'Benchville') RETURNING id", f"{name} cinema"
    )
    room = await conn.fetchval(
        "INSERT INTO rooms (cinema_id, name) VALUES ($1, $2) RETURNING id", cinema, name
    )
    labels = [chr(ord("A") + r) for r in range(rows)]
    await conn.copy_records_to_table(
        "seats",
        records=[(room, label, n) for label in labels for n in range(1, per_row + 1)],
        columns=["room_id", "row_label", "seat_number"],
    )
    seats = await conn.fetch(
        "SELECT id FROM seats WHERE room_id = $1 ORDER BY row_label, seat_number", room
    )
    return room, [r["id"] for r in seats]


async def seed_room_of_a_part(
    database_url: str, name: str, movie: str, rows: int, per_row: int, count: int
) -> tuple[list[int], list[int]]:
    """A room of ``name`` (``rows`` x ``per_row`` seats) with ``count`` screenings of a film of
    its own: (the screenings, the seats), which no other part of the bench touches."""
    conn = await asyncpg.connect(database_url)
    try:
        async with conn.transaction():
            room, seats = await seed_room(conn, name, rows, per_row)
            film = await conn.fetchval(
                "INSERT INTO movies (title, duration_minutes, genre) VALUES ($1, 120, 'Drama')"
                " RETURNING id",
                movie,
            )
            return await seed_screenings(conn, film, room, count), seats
    finally:
        await conn.close()


async def seed_screenings(conn: asyncpg.Connection, movie: int, room: int, count: int) -> list[int]:
    first = dt.datetime.now(dt.UTC).replace(microsecond=0) + dt.timedelta(days=1)
    rows = [
        (
            movie,
            room,
            first + i * SCREENING_GAP,
            first + i * SCREENING_GAP + dt.timedelta(hours=2),
            12.5,
        )
        for i in range(count)
    ]
    await conn.copy_records_to_table(
        "screenings", records=rows, columns=["movie_id", "room_id", "starts_at", "ends_at", "price"]
    )
    found = await conn.fetch(
        "SELECT id FROM screenings WHERE room_id = $1 ORDER BY starts_at", room
    )
    return [r["id"] for r in found]


async def books(database_url: str, tickets: list[tuple[int, int, int]]) -> tuple[int, int]:
    """(seats sold twice, 201 tickets missing from PostgreSQL)."""
    conn = await asyncpg.connect(database_url)
    try:
        double = await conn.fetchval(
            "SELECT count(*) FROM (SELECT 1 FROM tickets WHERE status IN ('pending', 'confirmed')"
            " GROUP BY screening_id, seat_id HAVING count(*) > 1) d"
        )
        lost = await conn.fetchval(
            "SELECT count(*) FROM unnest($1::bigint[], $2::bigint[], $3::bigint[])"
            " AS b(id, screening_id, seat_id) WHERE NOT EXISTS (SELECT 1 FROM tickets t"
            " WHERE t.id = b.id AND t.screening_id = b.screening_id AND t.seat_id = b.seat_id"
            " AND t.status IN ('pending', 'confirmed'))",
            [t[0] for t in tickets],
            [t[1] for t in tickets],
            [t[2] for t in tickets],
        )
    finally:
        await conn.close()
    return int(double), int(lost)
