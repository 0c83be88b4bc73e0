"""Catalog rows for the tests, written by direct SQL: ``from tests import factories as make``.

Every builder takes the connection first, then keyword arguments with sensible defaults, and
returns the new row's id (``show`` returns a :class:`Show`, ``seats`` a list of ids, ``sessions``
Authorization headers, ``sold_seats`` nothing).
"""

from __future__ import annotations

import itertools
import secrets
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from decimal import Decimal
from typing import Any

import asyncpg

from seatlock.accounts.tokens import TokenCodec

_seat_numbers = itertools.count(1)


@dataclass
class Show:
    id: int
    room_id: int
    seat_ids: list[int]


async def movie(db: asyncpg.Connection, title: str = "Heat", **fields: Any) -> int:
    values = {"duration_minutes": 120, **fields, "title": title}
    names = ", ".join(values)
    refs = ", ".join(f"${i}" for i in range(1, len(values) + 1))
    sql = f"INSERT INTO movies ({names}) VALUES ({refs}) RETURNING id"
    return int(await db.fetchval(sql, *values.values()))


async def cinema(
    db: asyncpg.Connection,
    name: str = "Rex",
    city: str = "Paris",
    amenities: list[str] | None = None,
) -> int:
    return int(
        await db.fetchval(
            "INSERT INTO cinemas (name, city, address, amenities) VALUES ($1, $2, $3, $4)"
            " RETURNING id",
            name,
            city,
            f"1 {name} street",
            amenities or [],
        )
    )


async def room(
    db: asyncpg.Connection,
    cinema_id: int,
    name: str = "Hall 1",
    *,
    rows: str = "",
    seats_per_row: int = 3,
) -> int:
    """A room; with ``rows`` (e.g. "AB"), ``seats_per_row`` seats in each of those rows."""
    room_id = int(
        await db.fetchval(
            "INSERT INTO rooms (cinema_id, name) VALUES ($1, $2) RETURNING id", cinema_id, name
        )
    )
    for row in rows:
        await seats(db, room_id, seats_per_row, row=row)
    return room_id


async def seats(
    db: asyncpg.Connection,
    room_id: int,
    count: int,
    *,
    row: str = "A",
    first: int = 1,
    seat_types: list[str] | None = None,
) -> list[int]:
    types = seat_types or ["standard"] * count
    return [
        int(
            await db.fetchval(
                "INSERT INTO seats (room_id, row_label, seat_number, seat_type)"
                " VALUES ($1, $2, $3, $4) RETURNING id",
                room_id,
                row,
                first + n,
                types[n],
            )
        )
        for n in range(count)
    ]


async def screening(
    db: asyncpg.Connection,
    movie_id: int,
    room_id: int,
    starts_at: datetime | None = None,
    price: str = "9.50",
    *,
    length: timedelta = timedelta(hours=2),
) -> int:
    starts = starts_at or datetime.now(UTC) + timedelta(days=1)
    return int(
        await db.fetchval(
            "INSERT INTO screenings (movie_id, room_id, starts_at, ends_at, price)"
            " VALUES ($1, $2, $3, $4, $5) RETURNING id",
            movie_id,
            room_id,
            starts,
            starts + length,
            Decimal(price),
        )
    )


async def show(
    db: asyncpg.Connection,
    seat_count: int = 10,
    *,
    movie_id: int | None = None,
    starts_in: timedelta = timedelta(days=1),
    price: str = "10.00",
    seat_types: list[str] | None = None,
) -> Show:
    """A cinema, a room of ``seat_count`` seats (row A) and one screening (of a new movie)."""
    room_id = await room(db, await cinema(db, "Odeon"), "Room 1")
    seat_ids = await seats(db, room_id, seat_count, seat_types=seat_types)
    if movie_id is None:
        movie_id = await movie(db, "Dune", duration_minutes=150)
    starts = datetime.now(UTC) + starts_in
    screening_id = await screening(
        db, movie_id, room_id, starts, price=price, length=timedelta(hours=3)
    )
    return Show(screening_id, room_id, seat_ids)


async def buyer(db: asyncpg.Connection) -> int:
    """A user who holds and buys seats (no password: the service tests act on ids)."""
    return int(
        await db.fetchval(
            "INSERT INTO users (email, password_hash, full_name) VALUES ($1, 'x', 'Buyer')"
            " RETURNING id",
            f"buyer-{secrets.token_hex(4)}@example.com",
        )
    )


async def ticket(
    db: asyncpg.Connection,
    user_id: int,
    screening_id: int,
    seat_id: int | None = None,
    *,
    status: str = "confirmed",
    price: str = "10.00",
    at: datetime | None = None,
) -> int:
    """One ticket in its own booking; without ``seat_id``, for the first seat of the room."""
    if seat_id is None:
        seat_id = await db.fetchval(
            "SELECT st.id FROM seats st JOIN screenings sc ON sc.room_id = st.room_id"
            " WHERE sc.id = $1 ORDER BY st.id LIMIT 1",
            screening_id,
        )
    at = at or datetime.now(UTC)
    booking = await db.fetchval(
        "INSERT INTO bookings (user_id, screening_id, seat_ids, created_at)"
        " VALUES ($1, $2, $3, $4) RETURNING id",
        user_id,
        screening_id,
        [seat_id],
        at,
    )
    confirmed = at if status == "confirmed" else None
    return int(
        await db.fetchval(
            "INSERT INTO tickets (booking_id, user_id, screening_id, seat_id, price, status,"
            " booked_at, confirmed_at) VALUES ($1, $2, $3, $4, $5, $6, $7, $8) RETURNING id",
            booking,
            user_id,
            screening_id,
            seat_id,
            Decimal(price),
            status,
            at,
            confirmed,
        )
    )


async def sold_seats(
    db: asyncpg.Connection,
    user_id: int,
    screening_id: int,
    count: int = 1,
    status: str = "confirmed",
    at: datetime | None = None,
) -> None:
    """``count`` tickets on new seats of the screening's room, in one booking."""
    room_id = await db.fetchval("SELECT room_id FROM screenings WHERE id = $1", screening_id)
    seat_ids = [(await seats(db, room_id, 1, first=next(_seat_numbers)))[0] for _ in range(count)]
    booking = await db.fetchval(
        "INSERT INTO bookings (user_id, screening_id, seat_ids) VALUES ($1, $2, $3) RETURNING id",
        user_id,
        screening_id,
        seat_ids,
    )
    await db.executemany(
        "INSERT INTO tickets (booking_id, user_id, screening_id, seat_id, price, status, booked_at)"
        " VALUES ($1, $2, $3, $4, 10, $5, $6)",
        [(booking, user_id, screening_id, s, status, at or datetime.now(UTC)) for s in seat_ids],
    )


async def sessions(db: asyncpg.Connection, jwt_secret: str, count: int) -> list[dict[str, str]]:
    """``count`` users with live sessions; returns their Authorization headers."""
    emails = [f"u{n}-{secrets.token_hex(4)}@example.com" for n in range(count)]
    ids = await db.fetch(
        "INSERT INTO users (email, password_hash, full_name)"
        " SELECT e, 'x', 'Racer' FROM unnest($1::text[]) AS e RETURNING id",
        emails,
    )
    session_ids = [secrets.token_hex(8) for _ in ids]
    await db.execute(
        "INSERT INTO auth_sessions (id, user_id, expires_at)"
        " SELECT * FROM unnest($1::text[], $2::bigint[], $3::timestamptz[])",
        session_ids,
        [r["id"] for r in ids],
        [datetime.now(UTC) + timedelta(days=1)] * len(ids),
    )
    codec = TokenCodec(jwt_secret, 15)
    return [
        {"Authorization": f"Bearer {codec.issue(r['id'], 'user', sid)}"}
        for r, sid in zip(ids, session_ids, strict=True)
    ]
