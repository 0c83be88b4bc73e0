"""The guide's "Rooms" and "Seats" groups: rooms of a cinema and the seats of a room."""

from __future__ import annotations

from datetime import datetime
from typing import Annotated, Literal

import msgspec

from api.answercache import catalog_changed
from api.caching import CATALOG
from api.cinemas import Title
from api.reads import catalog_read
from api.routing import Call, Router
from api.schemas import Page
from api.screenings import after_commit, seat_engine
from db import catalog
from seatlock.errors import ValidationFailed

router = Router("Rooms and seats")

MAX_SEATS_PER_CALL = 2000
RowLabel = Annotated[str, msgspec.Meta(pattern=r"^[A-Za-z0-9]{1,8}$")]
SeatNumber = Annotated[int, msgspec.Meta(ge=1, le=MAX_SEATS_PER_CALL)]
SeatType = Literal["standard", "premium", "vip", "wheelchair", "couple"]


class RoomIn(msgspec.Struct):
    name: Title
    room_type: Annotated[str, msgspec.Meta(pattern=r"^[A-Za-z0-9 _-]{1,50}$")] = "standard"


class RoomOut(msgspec.Struct):
    id: int
    cinema_id: int
    name: str
    room_type: str
    created_at: datetime
    capacity: int  # number of seats in the room


class SeatIn(msgspec.Struct):
    row_label: RowLabel
    seat_number: SeatNumber
    seat_type: SeatType = "standard"


class SeatsBulkIn(msgspec.Struct):
    """Either an explicit list, ``{"seats": [{"row_label", "seat_number", "seat_type"}, ...]}``,
    or a grid, ``{"rows": ["A", "B"], "seats_per_row": 20, "seat_type": "standard"}`` (seats
    numbered 1..seats_per_row in every row, all of ``seat_type``). At most 2000 seats per call;
    all are added or none (a seat that exists already: 409)."""

    seats: Annotated[list[SeatIn], msgspec.Meta(min_length=1)] | None = None
    rows: Annotated[list[RowLabel], msgspec.Meta(min_length=1)] | None = None
    seats_per_row: SeatNumber | None = None
    seat_type: SeatType = "standard"

    def expand(self) -> list[tuple[str, int, str]]:
        """The requested seats as (row_label, seat_number, seat_type)."""
        grid = self.rows is not None or self.seats_per_row is not None
        wanted: list[tuple[str, int, str]]
        if (self.seats is not None) == grid:
            raise ValidationFailed("Send either 'seats' or 'rows' with 'seats_per_row'")
        if self.seats is not None:
            wanted = [(s.row_label, s.seat_number, s.seat_type) for s in self.seats]
        elif self.rows is None or self.seats_per_row is None:
            raise ValidationFailed("A grid needs both 'rows' and 'seats_per_row'")
        else:
            count = len(self.rows) * self.seats_per_row
            if count > MAX_SEATS_PER_CALL:
                raise ValidationFailed(f"At most {MAX_SEATS_PER_CALL} seats per call")
            numbers = range(1, self.seats_per_row + 1)
            wanted = [(row, n, self.seat_type) for row in self.rows for n in numbers]
        if len(wanted) > MAX_SEATS_PER_CALL:
            raise ValidationFailed(f"At most {MAX_SEATS_PER_CALL} seats per call")
        return wanted


class SeatOut(msgspec.Struct):
    id: int
    room_id: int
    row_label: str
    seat_number: int
    seat_type: str


@router.post(
    "/api/v1/cinemas/{cinema_id:int}/rooms/",
    errors=(409,),
    access="admin",
    body=RoomIn,
    status=201,
    response=RoomOut,
)
async def create_room(call: Call) -> RoomOut:
    """Create a room in a cinema; room names are unique per cinema."""
    body: RoomIn = call.body
    row = await catalog.create_room(
        call.services.db, call.params["cinema_id"], body.name.strip(), body.room_type
    )
    catalog_changed(call.scope)
    return RoomOut(**row)


@router.get(
    "/api/v1/cinemas/{cinema_id:int}/rooms/", query=Page, response=list[RoomOut], cache=CATALOG
)
async def list_rooms(call: Call) -> list[RoomOut]:
    """List the rooms of a cinema, with their capacity."""
    page: Page = call.query
    rows = await catalog_read(
        call, catalog.list_rooms, call.params["cinema_id"], page.skip, page.limit
    )
    return [RoomOut(**row) for row in rows]


@router.get("/api/v1/rooms/{room_id:int}", response=RoomOut, cache=CATALOG)
async def get_room(call: Call) -> RoomOut:
    """Get a room, with its capacity."""
    return RoomOut(**await catalog_read(call, catalog.get_room, call.params["room_id"]))


@router.post(
    "/api/v1/rooms/{room_id:int}/seats/bulk",
    errors=(409,),
    access="admin",
    body=SeatsBulkIn,
    status=201,
    response=list[SeatOut],
)
async def create_seats(call: Call) -> list[SeatOut]:
    """Add many seats to a room at once: all of them, or none."""
    body: SeatsBulkIn = call.body
    room_id = call.params["room_id"]
    rows = await catalog.create_seats(call.services.db, room_id, body.expand())
    catalog_changed(call.scope)
    # Committed: screenings of this room that Redis has loaded learn of the new seats.
    engine, db = seat_engine(call), call.services.db

    async def refresh_room() -> None:
        await engine.refresh_loaded(await catalog.room_screening_ids(db, room_id))

    await after_commit(f"new seats of room {room_id}", refresh_room)
    return [SeatOut(**row) for row in rows]


@router.get("/api/v1/rooms/{room_id:int}/seats/", response=list[SeatOut], cache=CATALOG)
async def list_seats(call: Call) -> list[SeatOut]:
    """List all the seats of a room, row by row, then by number (a layout: not paginated)."""
    rows = await catalog_read(call, catalog.list_seats, call.params["room_id"])
    return [SeatOut(**row) for row in rows]
