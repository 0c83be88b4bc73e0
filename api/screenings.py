"""The guide's "Screenings" group: showtimes of a movie in a room."""

from __future__ import annotations

import asyncio
import datetime as dt
import functools
import logging
from collections.abc import Awaitable, Callable, Sequence
from decimal import Decimal
from typing import Annotated

import asyncpg
import msgspec

from api.answercache import catalog_changed
from api.caching import CATALOG
from api.reads import catalog_read
from api.routing import MAX_ID, Call, Router
from api.schemas import Page
from db import catalog
from seatlock.engine.seats import NODE_DOWN, SeatEngine
from seatlock.errors import SeatLockError, ValidationFailed

logger = logging.getLogger(__name__)
router = Router("Screenings")

Id = Annotated[int, msgspec.Meta(ge=1, le=MAX_ID)]
Aware = Annotated[dt.datetime, msgspec.Meta(tz=True)]  # a naive time is refused (422)
Price = Annotated[float, msgspec.Meta(ge=0, le=99_999_999)]
# Screenings are scheduled in this window; it keeps every computed end inside Python's datetime.
EARLIEST = dt.datetime(2000, 1, 1, tzinfo=dt.UTC)
LATEST = dt.datetime(2200, 1, 1, tzinfo=dt.UTC)


class ScreeningIn(msgspec.Struct):
    """``ends_at`` defaults to starts_at + the movie's duration + 15 minutes for cleaning; two
    screenings of one room may not overlap (409). ``no_single_gaps``: refuse holds that would
    strand a single free seat (true), allow them (false), or follow the server's
    SEATLOCK_NO_SINGLE_GAPS (null, the default)."""

    movie_id: Id
    room_id: Id
    starts_at: Aware
    price: Price
    ends_at: Aware | None = None
    no_single_gaps: bool | None = None

    def check(self) -> None:
        for moment in (self.starts_at, self.ends_at):
            if moment is not None and not EARLIEST <= moment < LATEST:
                raise ValidationFailed("Screening times must fall between 2000 and 2200")
        if self.ends_at is not None and self.ends_at <= self.starts_at:
            raise ValidationFailed("ends_at must be after starts_at")


class ScreeningQuery(Page):
    """``date`` is a UTC day (YYYY-MM-DD); ``upcoming=false`` includes screenings that began."""

    movie_id: Id | None = None
    cinema_id: Id | None = None
    date: dt.date | None = None
    upcoming: bool = True


class ScreeningOut(msgspec.Struct):
    id: int
    movie_id: int
    room_id: int
    cinema_id: int
    starts_at: dt.datetime
    ends_at: dt.datetime
    price: float
    created_at: dt.datetime
    movie_title: str
    duration_minutes: int
    poster_url: str | None
    room_name: str
    room_type: str
    cinema_name: str
    city: str
    no_single_gaps: bool | None  # null: the server's setting


def clock_now(call: Call) -> dt.datetime:
    """Now on Redis's clock, the one that refuses holds once a screening has started: an
    "upcoming" list offers exactly what can still be held, whatever this host's clock says."""
    return dt.datetime.fromtimestamp(call.services.engine.now_ms() / 1000, dt.UTC)


def screening_out(row: asyncpg.Record) -> ScreeningOut:
    return ScreeningOut(**{**row, "price": float(row["price"])})


@router.post(
    "/api/v1/screenings/",
    errors=(404, 409),
    access="admin",
    body=ScreeningIn,
    status=201,
    response=ScreeningOut,
)
async def create_screening(call: Call) -> ScreeningOut:
    """Schedule a movie in a room."""
    body: ScreeningIn = call.body
    body.check()
    row = await catalog.create_screening(
        call.services.db,
        body.movie_id,
        body.room_id,
        body.starts_at,
        Decimal(str(body.price)),
        body.ends_at,
        body.no_single_gaps,
    )
    catalog_changed(call.scope)
    return screening_out(row)


@router.get("/api/v1/screenings/", query=ScreeningQuery, response=list[ScreeningOut], cache=CATALOG)
async def list_screenings(call: Call) -> list[ScreeningOut]:
    """List screenings by start time, upcoming ones only unless ``upcoming=false``."""
    q: ScreeningQuery = call.query
    if q.date is not None and not EARLIEST.year <= q.date.year < LATEST.year:
        return []
    rows = await catalog_read(
        call,
        catalog.list_screenings,
        skip=q.skip,
        limit=q.limit,
        movie_id=q.movie_id,
        cinema_id=q.cinema_id,
        day=q.date,
        upcoming=q.upcoming,
        now=clock_now(call),
    )
    return [screening_out(row) for row in rows]


@router.get("/api/v1/screenings/{screening_id:int}", response=ScreeningOut, cache=CATALOG)
async def get_screening(call: Call) -> ScreeningOut:
    """Get a screening with its movie, room and cinema."""
    row = await catalog_read(call, catalog.get_screening, call.params["screening_id"])
    return screening_out(row)


@router.put(
    "/api/v1/screenings/{screening_id:int}",
    errors=(409,),
    access="admin",
    body=ScreeningIn,
    response=ScreeningOut,
)
async def replace_screening(call: Call) -> ScreeningOut:
    """Replace a screening; once tickets are sold it may not change rooms (409). A move to
    another room lets go of every hold of it (seats belong to rooms); other changes keep them."""
    body: ScreeningIn = call.body
    body.check()
    screening_id = call.params["screening_id"]
    # The room before the change, to tell a move. Two admins changing one screening's room at
    # the same moment can mislead it: a move then seen as none keeps holds of a room it left.
    before = await catalog.get_screening(call.services.db, screening_id)
    row = await catalog.replace_screening(
        call.services.db,
        screening_id,
        body.movie_id,
        body.room_id,
        body.starts_at,
        Decimal(str(body.price)),
        body.ends_at,
        body.no_single_gaps,
    )
    catalog_changed(call.scope)
    # After the commit above: the layout read is the new room's (and the move's lets go of every
    # hold: once it ran, no seat of the old room can be held).
    if row["room_id"] != before["room_id"]:
        step = functools.partial(call.services.holds.moved, screening_id)
    else:
        step = functools.partial(seat_engine(call).refresh, screening_id)
    await after_commit(f"change of screening {screening_id}", step)
    return screening_out(row)


@router.delete("/api/v1/screenings/{screening_id:int}", errors=(409,), access="admin", status=204)
async def delete_screening(call: Call) -> None:
    """Delete a screening; refused (409) once tickets were sold."""
    await catalog.delete_screening(call.services.db, call.params["screening_id"])
    catalog_changed(call.scope)
    await forget_screenings(call, [call.params["screening_id"]])


async def forget_screenings(call: Call, screening_ids: Sequence[int]) -> None:
    """Screenings whose delete PostgreSQL committed leave Redis: their seat state goes, and
    their tombstones refuse a load or refresh elsewhere that read them before the delete."""
    engine = seat_engine(call)
    await asyncio.gather(
        *(
            after_commit(f"delete of screening {i}", functools.partial(engine.forget, i))
            for i in screening_ids
        )
    )


def seat_engine(call: Call) -> SeatEngine:
    """The seat engine: catalog changes reach the live seat state in Redis through it."""
    engine = call.services.engine
    return engine


# The Redis side of a catalog change runs after PostgreSQL committed it. Until it has run, holds
# and seat maps in every process go by the old state (a deleted screening still takes holds, a
# moved one shows its old room, new seats are unknown), and the request's own retry cannot make
# up for it: a DELETE again is a 404, seats added again a 409, a PUT again no longer sees a move.
# So a step that Redis fails is retried in the background, with a capped backoff, until Redis
# takes it; the request still answers the failure (503). Each step reads PostgreSQL afresh
# (refresh, move) or only removes (forget), so a late run applies the latest state, not the one
# of its request. A move whose script ran but whose answer was lost runs again: it lets go of the
# holds taken in the new room meanwhile (within the backoff), the price of never leaving the old
# room's seats on sale. Lost with the process if it dies first (no pass repairs this in Redis).
RETRY_FIRST_S = 0.1
RETRY_MAX_S = 5.0
Step = Callable[[], Awaitable[object]]
_following: set[asyncio.Task[None]] = set()


async def after_commit(what: str, step: Step) -> None:
    """Run ``step``, the Redis side of a committed catalog change; when Redis fails it here, the
    failure is raised (503) and the step retried in the background until Redis takes it."""
    try:
        await step()
    except NODE_DOWN:
        task = asyncio.get_running_loop().create_task(_retried(what, step))
        _following.add(task)  # referenced until done: the loop keeps only weak references
        task.add_done_callback(_following.discard)
        raise


async def _retried(what: str, step: Step) -> None:
    delay = RETRY_FIRST_S
    while True:
        logger.warning("%s not in Redis yet, retrying in %.1f s", what, delay)
        await asyncio.sleep(delay)
        try:
            await step()
            logger.info("%s reached Redis", what)
            return
        except NODE_DOWN:
            pass
        except SeatLockError as exc:  # e.g. deleted meanwhile: nothing left to apply
            logger.warning("%s given up: %r", what, exc)
            return
        except Exception:  # not Redis's doing: trying again would fail the same way
            logger.exception("%s given up", what)
            return
        delay = min(delay * 2, RETRY_MAX_S)
