"""The catalog in PostgreSQL: cinemas, rooms, seats, movies and screenings.

Every list is one query (joins and aggregates, never a query per row). Deleting something that
tickets point at fails on the tickets' RESTRICT foreign keys; that becomes ``Conflict``.
"""

from __future__ import annotations

import contextlib
import datetime as dt
from collections.abc import AsyncIterator, Mapping, Sequence
from decimal import Decimal
from typing import Any

import asyncpg

from db.pool import Conn, Executor
from db.tickets import ROOM_CHANGE_LOCK_SQL
from seatlock.errors import Conflict, NotFound

# Rooms are read row by row: "A".."Z" before "AA", and "9" before "10".
SEAT_ORDER = "length(row_label), row_label, seat_number"
SEAT_COLUMNS = "id, room_id, row_label, seat_number, seat_type"
CINEMA_COLUMNS = (
    "id, name, address, city, phone, email, description, amenities, created_at, updated_at"
)
MOVIE_COLUMNS = (
    "id, title, description, duration_minutes, genre, language, rating, age_rating,"
    " release_date, director, poster_url, trailer_url, created_at, updated_at"
)
ROOM_SELECT = (
    "SELECT r.id, r.cinema_id, r.name, r.room_type, r.created_at,"
    " (SELECT count(*) FROM seats s WHERE s.room_id = r.id)::int AS capacity FROM rooms r"
)
SCREENING_SELECT = (
    "SELECT s.id, s.movie_id, s.room_id, s.starts_at, s.ends_at, s.price, s.created_at,"
    " s.no_single_gaps,"
    " m.title AS movie_title, m.duration_minutes, m.poster_url,"
    " r.name AS room_name, r.room_type, c.id AS cinema_id, c.name AS cinema_name, c.city"
    " FROM screenings s JOIN movies m ON m.id = s.movie_id JOIN rooms r ON r.id = s.room_id"
    " JOIN cinemas c ON c.id = r.cinema_id"
)
# Time between the end of a film and the next screening in the same room; part of ends_at.
CLEANING_GAP = dt.timedelta(minutes=15)


# -- for the seat engine ------------------------------------------------------------------------


async def screening_layout(
    db: Executor, screening_id: int
) -> tuple[dt.datetime, list[asyncpg.Record]] | None:
    """A screening's start and its room's seats (SEAT_COLUMNS, in seat-map order), or None."""
    rows = await db.fetch(
        "SELECT sc.starts_at, st.id, st.room_id, st.row_label, st.seat_number, st.seat_type"
        " FROM screenings sc LEFT JOIN seats st ON st.room_id = sc.room_id WHERE sc.id = $1"
        " ORDER BY length(st.row_label), st.row_label, st.seat_number",
        screening_id,
    )
    if not rows:
        return None
    seats = [r for r in rows if r["id"] is not None]
    return rows[0]["starts_at"], seats


# -- cinemas ------------------------------------------------------------------------------------


async def create_cinema(db: Executor, fields: Mapping[str, Any]) -> asyncpg.Record:
    return await _insert(db, "cinemas", fields, CINEMA_COLUMNS)


async def list_cinemas(db: Executor, skip: int, limit: int) -> list[asyncpg.Record]:
    return await db.fetch(
        f"SELECT {CINEMA_COLUMNS} FROM cinemas ORDER BY id OFFSET $1 LIMIT $2", skip, limit
    )


async def get_cinema(db: Executor, cinema_id: int) -> asyncpg.Record:
    row = await db.fetchrow(f"SELECT {CINEMA_COLUMNS} FROM cinemas WHERE id = $1", cinema_id)
    return _found(row, "Cinema")


async def update_cinema(db: Executor, cinema_id: int, changes: Mapping[str, Any]) -> asyncpg.Record:
    row = await _update(db, "cinemas", cinema_id, changes, CINEMA_COLUMNS, touch=True)
    return _found(row, "Cinema")


async def delete_cinema(db: Executor, cinema_id: int) -> list[int]:
    """Delete a cinema with its rooms and screenings; returns the ids of the screenings deleted
    (the seat engine forgets them). The cinema and then its rooms are locked first: no room or
    screening can be added under them before the delete (``_deleting``)."""
    async with _deleting(db, "cinemas", cinema_id, "Cinema") as conn:
        await conn.execute("SELECT 1 FROM rooms WHERE cinema_id = $1 FOR UPDATE", cinema_id)
        rows = await conn.fetch(
            "DELETE FROM screenings WHERE room_id IN (SELECT id FROM rooms WHERE cinema_id = $1)"
            " RETURNING id",
            cinema_id,
        )
        await conn.execute("DELETE FROM cinemas WHERE id = $1", cinema_id)
    return sorted(int(row["id"]) for row in rows)


# -- rooms and seats ----------------------------------------------------------------------------


async def create_room(db: Executor, cinema_id: int, name: str, room_type: str) -> asyncpg.Record:
    try:
        row: asyncpg.Record | None = await db.fetchrow(
            "INSERT INTO rooms (cinema_id, name, room_type) VALUES ($1, $2, $3)"
            " RETURNING id, cinema_id, name, room_type, created_at, 0 AS capacity",
            cinema_id,
            name,
            room_type,
        )
    except asyncpg.UniqueViolationError:
        raise Conflict("A room with this name already exists in this cinema") from None
    except asyncpg.ForeignKeyViolationError:
        raise NotFound("Cinema not found") from None
    assert row is not None
    return row


async def list_rooms(
    db: Executor, cinema_id: int, skip: int = 0, limit: int | None = None
) -> list[asyncpg.Record]:
    rows = await db.fetch(
        f"{ROOM_SELECT} WHERE r.cinema_id = $1 ORDER BY r.id OFFSET $2 LIMIT $3",
        cinema_id,
        skip,
        limit,
    )
    if not rows:
        await get_cinema(db, cinema_id)  # 404 for an unknown cinema, [] for an empty one
    return rows


async def get_room(db: Executor, room_id: int) -> asyncpg.Record:
    return _found(await db.fetchrow(f"{ROOM_SELECT} WHERE r.id = $1", room_id), "Room")


async def create_seats(
    db: Executor, room_id: int, seats: Sequence[tuple[str, int, str]]
) -> list[asyncpg.Record]:
    """Insert (row_label, seat_number, seat_type) rows in one statement: all of them or none."""
    labels, numbers, types = (list(column) for column in zip(*seats, strict=True))
    try:
        return await db.fetch(
            "WITH added AS (INSERT INTO seats (room_id, row_label, seat_number, seat_type)"
            " SELECT $1, * FROM unnest($2::text[], $3::int[], $4::text[])"
            f" RETURNING {SEAT_COLUMNS}) SELECT * FROM added ORDER BY {SEAT_ORDER}",
            room_id,
            labels,
            numbers,
            types,
        )
    except asyncpg.UniqueViolationError:
        raise Conflict("Some of these seats already exist in this room") from None
    except asyncpg.ForeignKeyViolationError:
        raise NotFound("Room not found") from None


async def list_seats(db: Executor, room_id: int) -> list[asyncpg.Record]:
    rows = await db.fetch(
        f"SELECT {SEAT_COLUMNS} FROM seats WHERE room_id = $1 ORDER BY {SEAT_ORDER}", room_id
    )
    if not rows:
        await get_room(db, room_id)
    return rows


# -- movies -------------------------------------------------------------------------------------


async def create_movie(db: Executor, fields: Mapping[str, Any]) -> asyncpg.Record:
    return await _insert(db, "movies", fields, MOVIE_COLUMNS)


async def list_movies(db: Executor, skip: int, limit: int) -> list[asyncpg.Record]:
    return await db.fetch(
        f"SELECT {MOVIE_COLUMNS} FROM movies ORDER BY id OFFSET $1 LIMIT $2", skip, limit
    )


async def get_movie(db: Executor, movie_id: int) -> asyncpg.Record:
    row = await db.fetchrow(f"SELECT {MOVIE_COLUMNS} FROM movies WHERE id = $1", movie_id)
    return _found(row, "Movie")


async def update_movie(db: Executor, movie_id: int, changes: Mapping[str, Any]) -> asyncpg.Record:
    row = await _update(db, "movies", movie_id, changes, MOVIE_COLUMNS, touch=True)
    return _found(row, "Movie")


async def delete_movie(db: Executor, movie_id: int) -> list[int]:
    """Delete a movie with its screenings; returns the ids of the screenings deleted (the seat
    engine forgets them)."""
    async with _deleting(db, "movies", movie_id, "Movie") as conn:
        rows = await conn.fetch("DELETE FROM screenings WHERE movie_id = $1 RETURNING id", movie_id)
        await conn.execute("DELETE FROM movies WHERE id = $1", movie_id)
    return sorted(int(row["id"]) for row in rows)


# -- screenings ---------------------------------------------------------------------------------


def _ends_at(starts: str, ends: str, gap: str) -> str:
    """SQL of a screening's end (``m``: its movie): the one given, else the start, the film's
    length and the cleaning gap."""
    length = "make_interval(mins => m.duration_minutes)"
    return f"coalesce({ends}::timestamptz, {starts} + {length} + {gap})"


async def create_screening(
    db: Executor,
    movie_id: int,
    room_id: int,
    starts_at: dt.datetime,
    price: Decimal,
    ends_at: dt.datetime | None = None,
    no_single_gaps: bool | None = None,
) -> asyncpg.Record:
    """Insert a screening; ends_at defaults to starts_at + the film's length + CLEANING_GAP."""
    try:
        new_id = await db.fetchval(
            "INSERT INTO screenings (movie_id, room_id, starts_at, ends_at, price, no_single_gaps)"
            f" SELECT m.id, r.id, $3::timestamptz, {_ends_at('$3', '$5', '$6')}, $4,"
            " $7 FROM movies m, rooms r WHERE m.id = $1 AND r.id = $2 RETURNING id",
            movie_id,
            room_id,
            starts_at,
            price,
            ends_at,
            CLEANING_GAP,
            no_single_gaps,
        )
    except (asyncpg.ExclusionViolationError, asyncpg.ForeignKeyViolationError) as exc:
        raise _screening_error(exc) from None
    if new_id is None:
        await _check_movie_and_room(db, movie_id, room_id)
    return await get_screening(db, new_id)


# PUT of a screening. ``$9``: whether it may move to another room, which only a caller holding
# the room-change lock may allow (``_move_screening``); then only while no ticket is sold.
REPLACE_SCREENING_SQL = (
    "UPDATE screenings s SET movie_id = m.id, room_id = r.id, starts_at = $4::timestamptz,"
    f" ends_at = {_ends_at('$4', '$6', '$7')}, price = $5, no_single_gaps = $8"
    " FROM movies m, rooms r WHERE s.id = $1 AND m.id = $2 AND r.id = $3"
    " AND (s.room_id = r.id OR ($9 AND NOT EXISTS (SELECT 1 FROM tickets t"
    " WHERE t.screening_id = s.id AND t.status IN ('pending', 'confirmed'))))"
    " RETURNING s.id"
)


async def replace_screening(
    db: Executor,
    screening_id: int,
    movie_id: int,
    room_id: int,
    starts_at: dt.datetime,
    price: Decimal,
    ends_at: dt.datetime | None = None,
    no_single_gaps: bool | None = None,
) -> asyncpg.Record:
    """PUT: every field anew. Moving a screening that sold tickets to another room is refused."""
    args = (
        screening_id,
        movie_id,
        room_id,
        starts_at,
        price,
        ends_at,
        CLEANING_GAP,
        no_single_gaps,
    )
    try:
        # The same room (the usual PUT: price, times): one statement, no lock, bookings go on.
        # The room is compared on the row as it is when updated (a concurrent move included).
        done = await db.fetchval(REPLACE_SCREENING_SQL, *args, False)
        if done is None:
            done = await _move_screening(db, args)
    except (asyncpg.ExclusionViolationError, asyncpg.ForeignKeyViolationError) as exc:
        raise _screening_error(exc) from None
    if done is None:
        await get_screening(db, screening_id)
        await _check_movie_and_room(db, movie_id, room_id)
        raise Conflict("Tickets were sold for this screening; it cannot change rooms")
    return await get_screening(db, screening_id)


async def _move_screening(db: Executor, args: tuple[Any, ...]) -> Any:
    """The PUT to another room, once no booking of the screening is in flight: the lock is taken
    in a statement of its own, so the UPDATE's check for sold tickets sees every booking that
    committed while it waited, and bookings that come later wait for the move and then book
    in the new room, or fail (db/tickets.py, ROOM_CHANGE_LOCK_SQL)."""
    async with _transaction(db) as conn:
        await conn.execute(ROOM_CHANGE_LOCK_SQL, args[0])
        return await conn.fetchval(REPLACE_SCREENING_SQL, *args, True)


async def list_screenings(
    db: Executor,
    *,
    skip: int,
    limit: int,
    movie_id: int | None = None,
    cinema_id: int | None = None,
    day: dt.date | None = None,
    upcoming: bool = True,
    now: dt.datetime | None = None,
) -> list[asyncpg.Record]:
    """Screenings by start time; ``day`` is a UTC calendar day."""
    where: list[str] = []
    args: list[Any] = []

    def add(condition: str, value: Any) -> None:
        args.append(value)
        where.append(condition.format(f"${len(args)}"))

    if movie_id is not None:
        add("s.movie_id = {}", movie_id)
    if cinema_id is not None:
        add("r.cinema_id = {}", cinema_id)
    if day is not None:
        start = dt.datetime.combine(day, dt.time(), dt.UTC)
        add("s.starts_at >= {}", start)
        add("s.starts_at < {}", start + dt.timedelta(days=1))
    if upcoming:
        add("s.starts_at >= {}", now or dt.datetime.now(dt.UTC))
    clause = f" WHERE {' AND '.join(where)}" if where else ""
    args += [skip, limit]
    return await db.fetch(
        f"{SCREENING_SELECT}{clause} ORDER BY s.starts_at, s.id"
        f" OFFSET ${len(args) - 1} LIMIT ${len(args)}",
        *args,
    )


async def get_screening(db: Executor, screening_id: int) -> asyncpg.Record:
    row = await db.fetchrow(f"{SCREENING_SELECT} WHERE s.id = $1", screening_id)
    return _found(row, "Screening")


async def delete_screening(db: Executor, screening_id: int) -> None:
    await _delete(db, "screenings", screening_id, "Screening")


async def missing_screenings(db: Executor, screening_ids: list[int]) -> list[int]:
    """Those of ``screening_ids`` that no screening has (deleted), in id order."""
    rows = await db.fetch(
        "SELECT id FROM unnest($1::bigint[]) AS asked(id)"
        " WHERE NOT EXISTS (SELECT 1 FROM screenings s WHERE s.id = asked.id) ORDER BY id",
        screening_ids,
    )
    return [int(row["id"]) for row in rows]


async def room_screening_ids(db: Executor, room_id: int) -> list[int]:
    """Every screening of a room (the seat engine refreshes those it has loaded)."""
    rows = await db.fetch("SELECT id FROM screenings WHERE room_id = $1 ORDER BY id", room_id)
    return [int(row["id"]) for row in rows]


def _screening_error(exc: Exception) -> Exception:
    if isinstance(exc, asyncpg.ExclusionViolationError):
        return Conflict("The room already has a screening at that time")
    return NotFound("Movie or room not found")


async def _check_movie_and_room(db: Executor, movie_id: int, room_id: int) -> None:
    await get_movie(db, movie_id)
    await get_room(db, room_id)


# -- shared -------------------------------------------------------------------------------------


def _found(row: asyncpg.Record | None, what: str) -> asyncpg.Record:
    if row is None:
        raise NotFound(f"{what} not found")
    return row


async def _insert(
    db: Executor, table: str, fields: Mapping[str, Any], columns: str
) -> asyncpg.Record:
    """INSERT one row. Column names come from our own Structs, never from the client's keys."""
    names = list(fields)
    marks = ", ".join(f"${i}" for i in range(1, len(names) + 1))
    row: asyncpg.Record | None = await db.fetchrow(
        f"INSERT INTO {table} ({', '.join(names)}) VALUES ({marks}) RETURNING {columns}",
        *fields.values(),
    )
    assert row is not None
    return row


async def _update(
    db: Executor, table: str, row_id: int, changes: Mapping[str, Any], columns: str, *, touch: bool
) -> asyncpg.Record | None:
    sets = [f"{name} = ${i}" for i, name in enumerate(changes, start=2)]
    if touch:
        sets.append("updated_at = now()")
    return await db.fetchrow(
        f"UPDATE {table} SET {', '.join(sets)} WHERE id = $1 RETURNING {columns}",
        row_id,
        *changes.values(),
    )


@contextlib.asynccontextmanager
async def _deleting(db: Executor, table: str, row_id: int, what: str) -> AsyncIterator[Conn]:
    """A transaction that deletes a row whose delete cascades to screenings, the row locked
    FOR UPDATE first. Screenings are deleted by the caller (RETURNING their ids, which the
    cascade would not tell): the lock conflicts with the KEY SHARE lock that adding a
    screening (or room) under the row takes, so none can appear between that delete and the
    row's own, and one being added commits before it and is seen. NotFound when the row is
    gone, Conflict when tickets point at what would go."""
    try:
        async with _transaction(db) as conn:
            found = await conn.fetchval(f"SELECT id FROM {table} WHERE id = $1 FOR UPDATE", row_id)
            if found is None:
                raise NotFound(f"{what} not found")
            yield conn
    except asyncpg.ForeignKeyViolationError:
        raise _has_tickets(what) from None


@contextlib.asynccontextmanager
async def _transaction(db: Executor) -> AsyncIterator[Conn]:
    if isinstance(db, asyncpg.Pool):
        async with db.acquire() as conn, conn.transaction():
            yield conn
    else:
        async with db.transaction():
            yield db


def _has_tickets(what: str) -> Conflict:
    """A delete refused: tickets point at the row, or at what its delete would cascade to."""
    return Conflict(f"{what} has sold tickets and cannot be deleted")


async def _delete(db: Executor, table: str, row_id: int, what: str) -> None:
    try:
        status = await db.execute(f"DELETE FROM {table} WHERE id = $1", row_id)
    except asyncpg.ForeignKeyViolationError:
        raise _has_tickets(what) from None
    if status == "DELETE 0":
        raise NotFound(f"{what} not found")
