"""Demo data: one cinema with three rooms, eight movies with their cast, a week of screenings,
reviews and reactions from a small audience, a favorite cinema and a search history.

Accounts (documented in the README as well):
- demo@seatlock.local / ``demo-pass-123`` (a user)
- admin@seatlock.local / ``admin-pass-123`` (an admin), unless SEATLOCK_ADMIN_EMAIL is set
"""

from __future__ import annotations

import asyncio
import datetime as dt
import logging
import secrets
from dataclasses import dataclass
from decimal import Decimal
from typing import Any

import asyncpg

from db.catalog import CLEANING_GAP
from seatlock.accounts.passwords import hash_password
from seatlock.settings import Settings

logger = logging.getLogger(__name__)

DEMO_EMAIL, DEMO_PASSWORD = "demo@seatlock.local", "demo-pass-123"
ADMIN_EMAIL, ADMIN_PASSWORD = "admin@seatlock.local", "admin-pass-123"
SEED_LOCK_KEY = 0x5EA7_DE30  # pg_advisory_xact_lock: two seeders never both see "empty"
DAYS = 7
FIRST_SHOW, LAST_START = dt.time(11, 0), dt.time(22, 30)  # UTC


@dataclass(frozen=True)
class RoomPlan:
    name: str
    room_type: str
    rows: int
    seats_per_row: int
    price: Decimal


ROOMS = [
    RoomPlan("Grand Hall", "imax", 12, 20, Decimal("14.50")),
    RoomPlan("Studio 2", "standard", 10, 16, Decimal("11.00")),
    RoomPlan("Salon 3", "standard", 8, 12, Decimal("9.50")),
]

CINEMA: dict[str, Any] = {
    "name": "Seatlock Picture House",
    "address": "12 Harbour Street",
    "city": "Portsmouth",
    "phone": "+44 23 9200 1234",
    "email": "hello@picturehouse.seatlock.local",
    "description": "A restored 1930s picture palace with three screens and a rooftop bar.",
    "amenities": ["IMAX", "Dolby Atmos", "wheelchair access", "bar", "parking", "3D"],
}

# title, minutes, genre, rating, age rating, days since release (negative: not out yet), director
MOVIES: list[tuple[str, int, str, str, str, int, str]] = [
    ("The Long Night", 128, "Drama", "7.8", "15", 12, "Maren Holt"),
    ("Orbit of Ash", 141, "Science Fiction", "8.2", "12A", 5, "Tomas Ekwueme"),
    ("Paper Lanterns", 97, "Animation", "7.4", "U", 30, "Yuki Arada"),
    ("The Quiet Heist", 112, "Thriller", "7.1", "15", 19, "Lena Marchetti"),
    ("Salt and Iron", 134, "Historical", "6.9", "12A", 44, "Owen Brask"),
    ("Midnight Tram", 104, "Comedy", "6.6", "12A", 8, "Priya Castellanos"),
    ("Wildwater", 118, "Adventure", "7.5", "PG", 2, "Jonah Feld"),
    ("Glass Garden", 109, "Romance", "7.0", "12A", -3, "Ines Valdur"),
]


# Three billed actors (and their characters) per movie, by title.
CAST: dict[str, list[tuple[str, str]]] = {
    "The Long Night": [("Ada Kersey", "Ruth Calder"), ("Idris Mbeki", "Tom Calder"),
                       ("Nell Faraday", "Sister Agnes")],
    "Orbit of Ash": [("Kai Morrow", "Commander Vale"), ("Sana Iqbal", "Dr. Oyelaran"),
                     ("Piet Lund", "The Pilot")],
    "Paper Lanterns": [("Mio Tanabe", "Hana (voice)"), ("Rafe Collins", "Grandfather (voice)"),
                       ("Lia Oduya", "The Fox (voice)")],
    "The Quiet Heist": [("Marco Bellini", "Dario"), ("June Achterberg", "Inspector Maas"),
                        ("Theo Grant", "Lucky")],
    "Salt and Iron": [("Brann Doyle", "Captain Harrow"), ("Elise Moreau", "Margaret Harrow"),
                      ("Sef Adeyemi", "Quartermaster Jones")],
    "Midnight Tram": [("Polly Reyes", "Dot"), ("Gus Halloran", "The Conductor"),
                      ("Ravi Menon", "Sunny")],
    "Wildwater": [("Cora Lindqvist", "Freya"), ("Ezra Holm", "Bjorn"),
                  ("Tala Nakoma", "The Guide")],
    "Glass Garden": [("Iris Delacroix", "Camille"), ("Noah Vance", "Julien"),
                     ("Bea Sorensen", "Madame Roux")],
}  # fmt: skip

AUDIENCE = ["Priya", "Marek", "Lotte", "Samir", "Grace"]
REVIEWS = [
    (5, "Loved every minute. The sound in the Grand Hall is something else."),
    (4, "Great performances, a little long in the middle."),
    (3, "Solid, but I expected more from the second half."),
    (5, "Went twice. Book the back row, the vip seats are worth it."),
    (4, "Beautifully shot; the score stayed with me all week."),
    (2, "Not for me, though the friends I went with enjoyed it."),
]


async def seed_demo(settings: Settings, *, only_if_empty: bool) -> str:
    """Add the demo catalog and accounts; return a one-line summary."""
    hashes = await _password_hashes(settings)
    conn = await asyncpg.connect(settings.database_url)
    try:
        async with conn.transaction():
            await conn.execute("SELECT pg_advisory_xact_lock($1)", SEED_LOCK_KEY)
            if only_if_empty and await conn.fetchval("SELECT EXISTS (SELECT 1 FROM cinemas)"):
                return "demo data skipped: the database already has cinemas"
            summary = await _seed(conn, hashes, dt.datetime.now(dt.UTC))
    finally:
        await conn.close()
    logger.info("%s", summary)
    return summary


async def _password_hashes(settings: Settings) -> dict[str, tuple[str, str]]:
    """email -> (role, bcrypt hash), hashed in worker threads before the transaction opens.

    The audience accounts get a random password nobody knows: they only write reviews.
    """
    accounts = {DEMO_EMAIL: ("user", DEMO_PASSWORD)}
    if not settings.admin_email:
        accounts[ADMIN_EMAIL] = ("admin", ADMIN_PASSWORD)
    for name in AUDIENCE:
        # Random, and always mixed (a token can come out all letters, which check_strength refuses).
        accounts[_audience_email(name)] = ("user", secrets.token_urlsafe(24) + "-7")
    hashed = await asyncio.gather(
        *(hash_password(password, settings.bcrypt_rounds) for _, password in accounts.values())
    )
    return {
        email: (role, h) for (email, (role, _)), h in zip(accounts.items(), hashed, strict=True)
    }


async def _seed(
    conn: asyncpg.Connection, hashes: dict[str, tuple[str, str]], now: dt.datetime
) -> str:
    users = await _add_users(conn, hashes)
    marks = ", ".join(f"${i}" for i in range(1, len(CINEMA) + 1))
    cinema_id = await conn.fetchval(
        f"INSERT INTO cinemas ({', '.join(CINEMA)}) VALUES ({marks}) RETURNING id",
        *CINEMA.values(),
    )
    rooms = [await _add_room(conn, cinema_id, plan) for plan in ROOMS]
    movies = await _add_movies(conn, now.date())
    shows = _schedule(rooms, movies, now)
    await conn.copy_records_to_table(
        "screenings",
        records=shows,
        columns=["movie_id", "room_id", "starts_at", "ends_at", "price"],
    )
    cast = await _add_cast(conn, movies)
    reviews = await _add_audience(conn, cinema_id, movies)
    seats = sum(plan.rows * plan.seats_per_row for plan in ROOMS)
    return (
        f"demo data: 1 cinema, {len(rooms)} rooms, {seats} seats, {len(movies)} movies,"
        f" {cast} cast members, {len(shows)} screenings, {reviews} reviews,"
        f" {users} new account(s) ({DEMO_EMAIL}"
        f"{', ' + ADMIN_EMAIL if ADMIN_EMAIL in hashes else ''} and {len(AUDIENCE)} reviewers)"
    )


async def _add_users(conn: asyncpg.Connection, hashes: dict[str, tuple[str, str]]) -> int:
    rows = [
        (email, h, email.split("@")[0].capitalize(), role) for email, (role, h) in hashes.items()
    ]
    added = await conn.fetch(
        "INSERT INTO users (email, password_hash, full_name, role)"
        " SELECT * FROM unnest($1::text[], $2::text[], $3::text[], $4::text[])"
        " ON CONFLICT ((lower(email))) DO NOTHING RETURNING id",
        *(list(column) for column in zip(*rows, strict=True)),
    )
    return len(added)


async def _add_room(
    conn: asyncpg.Connection, cinema_id: int, plan: RoomPlan
) -> tuple[int, RoomPlan]:
    room_id: int = await conn.fetchval(
        "INSERT INTO rooms (cinema_id, name, room_type) VALUES ($1, $2, $3) RETURNING id",
        cinema_id,
        plan.name,
        plan.room_type,
    )
    await conn.copy_records_to_table(
        "seats",
        records=_seat_plan(room_id, plan),
        columns=["room_id", "row_label", "seat_number", "seat_type"],
    )
    return room_id, plan


def _seat_plan(room_id: int, plan: RoomPlan) -> list[tuple[int, str, int, str]]:
    """Front row: wheelchair places at both ends. Back row: vip. The row before it: premium."""
    seats = []
    for r in range(plan.rows):
        label = chr(ord("A") + r)
        for n in range(1, plan.seats_per_row + 1):
            kind = "standard"
            if r == plan.rows - 1:
                kind = "vip"
            elif r == plan.rows - 2:
                kind = "premium"
            elif r == 0 and n in (1, 2, plan.seats_per_row - 1, plan.seats_per_row):
                kind = "wheelchair"
            seats.append((room_id, label, n, kind))
    return seats


async def _add_movies(conn: asyncpg.Connection, today: dt.date) -> list[tuple[int, int]]:
    """Insert MOVIES; return (id, duration) in MOVIES order."""
    rows = [
        (
            title,
            f"{title}: a {genre.lower()} by {director}.",
            minutes,
            genre,
            Decimal(rating),
            age,
            today - dt.timedelta(days=released),
            director,
            f"https://posters.seatlock.local/{title.lower().replace(' ', '-')}.jpg",
        )
        for title, minutes, genre, rating, age, released, director in MOVIES
    ]
    added = await conn.fetch(
        "INSERT INTO movies (title, description, duration_minutes, genre, rating, age_rating,"
        " release_date, director, poster_url)"
        " SELECT * FROM unnest($1::text[], $2::text[], $3::int[], $4::text[], $5::numeric[],"
        " $6::text[], $7::date[], $8::text[], $9::text[]) RETURNING id, title, duration_minutes",
        *(list(column) for column in zip(*rows, strict=True)),
    )
    by_title = {row["title"]: (row["id"], row["duration_minutes"]) for row in added}
    return [by_title[movie[0]] for movie in MOVIES]


def _schedule(
    rooms: list[tuple[int, RoomPlan]], movies: list[tuple[int, int]], now: dt.datetime
) -> list[tuple[int, int, dt.datetime, dt.datetime, Decimal]]:
    """Back-to-back shows in every room from now for DAYS days; released movies only."""
    playing = movies[:-1]  # the last one is "coming soon"
    shows = []
    for day in range(DAYS):
        date = now.date() + dt.timedelta(days=day)
        for index, (room_id, plan) in enumerate(rooms):
            start = dt.datetime.combine(date, FIRST_SHOW, dt.UTC)
            last = dt.datetime.combine(date, LAST_START, dt.UTC)
            turn = day + index * 3
            while start <= last:
                movie_id, minutes = playing[turn % len(playing)]
                end = start + dt.timedelta(minutes=minutes) + CLEANING_GAP
                if start > now:
                    shows.append((movie_id, room_id, start, end, plan.price))
                start = _round_up(end, 15)
                turn += 1
    return shows


async def _add_cast(conn: asyncpg.Connection, movies: list[tuple[int, int]]) -> int:
    """The director and three billed actors of every movie."""
    records: list[tuple[int, str, str, str | None, int]] = []
    for (movie_id, _), movie in zip(movies, MOVIES, strict=True):
        records.append((movie_id, movie[6], "director", None, 0))
        for order, (actor, character) in enumerate(CAST[movie[0]], start=1):
            records.append((movie_id, actor, "actor", character, order))
    await conn.copy_records_to_table(
        "cast_members",
        records=records,
        columns=["movie_id", "name", "role", "character_name", "billing_order"],
    )
    return len(records)


async def _add_audience(
    conn: asyncpg.Connection, cinema_id: int, movies: list[tuple[int, int]]
) -> int:
    """Reviews (with likes), the demo user's favorite cinema and recent searches."""
    users = {
        row["email"]: row["id"]
        for row in await conn.fetch(
            "SELECT id, email FROM users WHERE email = ANY($1::text[])",
            [DEMO_EMAIL, *(_audience_email(name) for name in AUDIENCE)],
        )
    }
    reviewers = [users[_audience_email(name)] for name in AUDIENCE]
    reviews = []
    for index, (movie_id, _) in enumerate(movies[:-1]):  # nobody has seen the coming-soon one
        for offset, user_id in enumerate(reviewers[: 2 + index % 3]):
            rating, text = REVIEWS[(index + offset) % len(REVIEWS)]
            reviews.append((movie_id, user_id, rating, text))
    ids = await conn.fetch(
        "INSERT INTO reviews (movie_id, user_id, rating, content)"
        " SELECT * FROM unnest($1::bigint[], $2::bigint[], $3::smallint[], $4::text[])"
        " RETURNING id, user_id",
        *(list(column) for column in zip(*reviews, strict=True)),
    )
    likes = [
        (row["id"], liker, "like")
        for n, row in enumerate(ids)
        for liker in reviewers[: n % 4]
        if liker != row["user_id"]
    ]
    await conn.copy_records_to_table(
        "review_reactions", records=likes, columns=["review_id", "user_id", "reaction"]
    )
    demo = users[DEMO_EMAIL]
    await conn.execute(
        "INSERT INTO favorite_cinemas (user_id, cinema_id) VALUES ($1, $2) ON CONFLICT DO NOTHING",
        demo,
        cinema_id,
    )
    await conn.executemany(
        "INSERT INTO search_history (user_id, query) VALUES ($1, $2)",
        [(demo, q) for q in ("orbit", "heist movies", "animation for kids")],
    )
    return len(reviews)


def _audience_email(name: str) -> str:
    return f"{name.lower()}@audience.seatlock.local"


def _round_up(moment: dt.datetime, minutes: int) -> dt.datetime:
    step = dt.timedelta(minutes=minutes)
    return moment + (dt.datetime.min.replace(tzinfo=dt.UTC) - moment) % step
