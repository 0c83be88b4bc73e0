"""Seat maps: live status from Redis joined with seat details cached per process.

``reserved_by`` is shown only to the holder (invariant 9); ``expires_at`` to everyone.

The public map (no ``reserved_by``) of a screening is rendered to JSON once per process and
reused while the engine's per-screening version is unchanged, the seat details are the same
object, and no hold in it has reached its deadline (a lapsed hold must not stay "reserved" until
the sweep bumps the version). A signed-in viewer who holds seats in the screening gets the map
built from the cached entries with their own seats patched.

Validators and codings (api/caching.py): a map's ETag is made of the screening id, its version,
the earliest hold deadline (a lapsed hold changes the map, not the version), a digest of the
seats' fixed JSON and, for a holder's own view, the holder; so an ``If-None-Match`` hit is a 304
without serialising anything, and it is exactly as fresh as the cached map it stands for. The
public variants' br/gzip bodies are compressed once per rendered map and kept with it (one
compression per change of the screening, not one per read); a holder's own view, rarer and
different per holder, is compressed on the fly.

Checking the version costs one Redis GET. It is skipped while the entry is trusted: the hub's
subscription is live and has been since the entry's last check, no event of the screening
arrived and no script of it ran in this process since, and that check is under TRUST_MS old.
Every seat change publishes an event and every local script run invalidates, so within one
process a write is seen by the next read. Across processes a change shows once its event reaches
this process's hub (pub/sub delay, normally well under a millisecond) and at the latest TRUST_MS
after the last version check, which also bounds what no event announces (a Redis flush).
"""

from __future__ import annotations

import asyncio
from dataclasses import dataclass, field
from datetime import datetime
from hashlib import blake2b
from typing import NamedTuple

import msgspec
from starlette.types import Scope

from api import caching
from api.caching import MIN_SIZE, REVALIDATE, VARY_ALL, VARY_PUBLIC, Headers, Reply
from api.rendering import dumps
from api.reservations import utc
from api.rooms import SeatOut
from api.routing import Call, Router
from db.layouts import ScreeningSeats, SeatInfo
from seatlock.engine.errors import ScreeningNotFound
from seatlock.engine.model import SeatState
from seatlock.services.container import Services
from seatlock.services.seatmaps import Flight, SeatMapCache

router = Router("Seat availability")

NEVER = 2**63
NULL = b"null"
ALL, AVAILABLE = b"m", b"a"  # the two lists a map answers, as their ETags name them
# The same lists in {"version": ..., "seats": [...]} (?with_version=true): answers of their own.
ALL_V, AVAILABLE_V = b"mv", b"av"
VERSION_HEADER = b"x-seat-map-version"
_STATUS = {s: dumps(s) for s in ("available", "reserved", "booked")}


class SeatStatusOut(msgspec.Struct):
    seat: SeatOut
    status: str  # "available" | "reserved" | "booked"
    reserved_by: int | None
    expires_at: datetime | None


class VersionedSeats(msgspec.Struct):
    """A seat list with the version of the map it shows (``?with_version=true``)."""

    version: int  # resume the WebSocket with ?since= this (docs/websockets.md)
    seats: list[SeatStatusOut]


class MapQuery(msgspec.Struct, frozen=True):  # frozen: shared when there is no query string
    # Unknown parameters stay ignored, as before the flag existed (cache busters).
    with_version: bool = False  # answer {"version", "seats"} instead of the bare list


class SeatJson(NamedTuple):
    prefix: bytes  # {"seat":{...},"status":
    free: bytes  # the whole entry of the seat when available


@dataclass(slots=True)
class Rendered:
    """One screening's public map as JSON pieces, one per seat, joined into the answers."""

    version: int
    details: ScreeningSeats
    valid_until_ms: int  # the earliest hold deadline in the map
    seats: dict[int, SeatJson]  # seat id -> its fixed JSON pieces, in map order
    statuses: list[str]  # per seat, in map order
    holders: list[int | None]  # per seat: the user holding it (reserved seats only)
    expiries: list[bytes]  # per seat: its expires_at as JSON
    parts: list[bytes]  # per seat: its public entry (no reserved_by)
    all_json: bytes
    available_json: bytes | None = None
    checked_ms: int = 0  # when the version was last confirmed current
    seen: int = -1  # the cache's change count then (-1: never trusted)
    epoch: int = -1  # the hub's subscription epoch then
    layout: bytes = b""  # a digest of the seats' fixed JSON: part of the ETags
    exact: bool = True  # the map is the state of ``version``: nothing changed while it was read
    stored: dict[tuple[bytes, str], bytes] = field(default_factory=dict)  # compressed bodies
    public: dict[tuple[bytes, str | None], Headers] = field(default_factory=dict)  # their headers

    def usable(self, version: int, details: ScreeningSeats | None, now_ms: int) -> bool:
        return version == self.version and details is self.details and now_ms < self.valid_until_ms

    def available(self) -> bytes:
        if self.available_json is None:
            free = zip(self.parts, self.statuses, strict=True)
            self.available_json = _array([part for part, st in free if st == "available"])
        return self.available_json

    def tagged(self) -> bool:
        """Whether the answers carry ETags: only a map known to be the state of its version."""
        return self.exact and self.version > 0

    def etag(self, screening_id: int, kind: bytes, holder: int | None, coding: str | None) -> bytes:
        """The strong ETag of one answer: its coding included (RFC 9110 8.8.3.3)."""
        tag = b'"%s%d.%d.%d.%s' % (
            kind,
            screening_id,
            self.version,
            self.valid_until_ms,
            self.layout,
        )
        if holder is not None:
            tag += b".u%d" % holder
        return tag + (b"." + coding.encode() + b'"' if coding else b'"')

    def headers(
        self, screening_id: int, kind: bytes, holder: int | None, coding: str | None
    ) -> Headers:
        """The headers of one answer; the public ones made once per map (never changed)."""
        if holder is not None:
            return reply_headers(self, self.etag(screening_id, kind, holder, coding), kind, coding)
        headers = self.public.get((kind, coding))
        if headers is None:
            etag = self.etag(screening_id, kind, None, coding)
            headers = self.public[kind, coding] = reply_headers(self, etag, kind, coding)
        return headers

    def compressed(self, kind: bytes, coding: str) -> bytes:
        """A public list in ``coding``, compressed on first use and kept with the map."""
        body = self.stored.get((kind, coding))
        if body is None:
            body = self.stored[kind, coding] = caching.compress(self.plain(kind), coding)
        return body

    def plain(self, kind: bytes) -> bytes:
        """A public answer's body; the versioned ones made on first use and kept."""
        if kind == ALL:
            return self.all_json
        if kind == AVAILABLE:
            return self.available()
        body = self.stored.get((kind, ""))
        if body is None:
            seats = self.all_json if kind == ALL_V else self.available()
            body = self.stored[kind, ""] = self.versioned(seats)
        return body

    def versioned(self, seats: bytes) -> bytes:
        return b'{"version":%d,"seats":%s}' % (self.version, seats)

    def for_viewer(self, viewer: int | None) -> bytes:
        """The full map as ``viewer`` may see it: their own holds name them (invariant 9)."""
        if viewer is None or viewer not in self.holders:
            return self.all_json
        seats = zip(self.seats.values(), self.holders, self.expiries, self.parts, strict=True)
        return _array(
            [
                entry_json(fixed.prefix, "reserved", viewer, expiry) if holder == viewer else part
                for fixed, holder, expiry, part in seats
            ]
        )


def cache_of(services: Services) -> SeatMapCache[Rendered]:
    """The process's cache of rendered maps (built by the composition root, typed here)."""
    cache: SeatMapCache[Rendered] = services.seatmaps
    return cache


def _epoch(services: Services, screening_id: int) -> int:
    """The epoch of the hub's subscription that brings the screening's events; -2 (matching no
    entry) while none does."""
    epoch = services.hub.hears(screening_id)
    return -2 if epoch is None else epoch


async def rendered_map(services: Services, screening_id: int) -> Rendered:
    """The screening's public map, from the cache when still current."""
    cache = cache_of(services)
    cached = cache.get(screening_id)
    now_ms = services.engine.now_ms()  # Redis's clock: that of valid_until_ms
    details = services.layouts.cached(screening_id)
    epoch = _epoch(services, screening_id)
    if (
        cached is not None
        and details is cached.details
        and now_ms < cached.valid_until_ms
        and cache.trusted(screening_id, cached, now_ms, epoch)
    ):
        return cached
    # Counted before the GET: an invalidation during it leaves the entry untrusted.
    seen = cache.changes
    # The version is read before the map: a change in between only makes the entry look stale.
    version = await services.engine.version(screening_id)
    cached = cache.get(screening_id)
    now_ms = services.engine.now_ms()
    details = services.layouts.cached(screening_id)
    if cached is not None and cached.usable(version, details, now_ms):
        cache.mark_checked(cached, now_ms, seen, epoch)
        return cached
    flight = cache.flights.get(screening_id)
    if flight is not None and flight.version >= version:
        # Read after this caller's version read: it shows every change this caller must see.
        # Only a hold that lapsed since (no version marks that) can make it unusable.
        rendered = await asyncio.shield(flight.task)
        if services.engine.now_ms() < rendered.valid_until_ms:
            return rendered
    return await _fly(services, screening_id, version, seen, epoch)


async def _fly(
    services: Services, screening_id: int, version: int, seen: int, epoch: int
) -> Rendered:
    """Build the map as a task that later callers of the same or an older version share.

    A task, not this caller's coroutine: a caller that goes away (its client hung up) must not
    cancel the build the others wait for.
    """
    cache = cache_of(services)
    task = asyncio.get_running_loop().create_task(
        _build_and_keep(services, screening_id, version, seen, epoch)
    )
    flight = Flight(version, task)
    cache.flights[screening_id] = flight

    def landed(done: asyncio.Task[Rendered]) -> None:
        if cache.flights.get(screening_id) is flight:
            del cache.flights[screening_id]
        if not done.cancelled():
            done.exception()  # retrieved: every caller may have gone before it failed

    task.add_done_callback(landed)
    return await asyncio.shield(task)


async def _build_and_keep(
    services: Services, screening_id: int, version: int, seen: int, epoch: int
) -> Rendered:
    now_ms = services.engine.now_ms()
    rendered = await _build(services, screening_id, version)
    # Version 0: Redis does not have the screening (never loaded, or lost): never trust a cache.
    if version:
        cache = cache_of(services)
        cache.mark_checked(rendered, now_ms, seen, epoch)
        cache.put(screening_id, rendered)
    return rendered


async def _build(services: Services, screening_id: int, version: int) -> Rendered:
    states = await services.engine.seat_map(screening_id)
    # A change between the version read and the map read leaves a map newer than ``version``:
    # fine for the cache (the next check sees a newer version and renders again), not for an
    # ETag, which would name two different maps (another process renders the older state under
    # the same version). Read once more, and send no ETag unless nothing changed.
    exact = bool(version) and await services.engine.version(screening_id) == version
    return await _render(services, screening_id, version, states, exact)


async def snapshot_json(
    services: Services, screening_id: int, current: int, viewer: int | None
) -> tuple[int, bytes]:
    """A map of the screening no older than version ``current`` and its version, as the
    availability answers it to ``viewer`` (a WebSocket resume's snapshot): the cached map when
    it is exactly the state of ``current`` (no read, no rendering), else one read now."""
    cached = cache_of(services).peek(screening_id)
    details = services.layouts.cached(screening_id)
    if cached is None or not (
        cached.exact and cached.usable(current, details, services.engine.now_ms())
    ):
        cached = await current_map(services, screening_id)
    return cached.version, cached.for_viewer(viewer)


async def current_map(services: Services, screening_id: int) -> Rendered:
    """The screening's map read now, in one script run with its version, rendered once for
    every viewer (``Rendered.for_viewer``)."""
    version, states = await services.engine.versioned_map(screening_id)
    return await _render(services, screening_id, version, states, bool(version))


async def _render(
    services: Services, screening_id: int, version: int, states: list[SeatState], exact: bool
) -> Rendered:
    details = await services.layouts.seats(screening_id, [s.seat_id for s in states])
    if details is None:
        raise ScreeningNotFound(screening_id)
    by_id = {s.seat_id: s for s in states}
    seats = seat_json(cache_of(services), screening_id, details, by_id)
    in_order = [by_id[seat_id] for seat_id in seats]
    statuses = [s.status for s in in_order]
    holders = [s.user_id if s.status == "reserved" else None for s in in_order]
    deadlines = [s.expires_at_ms if s.status == "reserved" else None for s in in_order]
    expiries = [NULL if ms is None else dumps(utc(ms)) for ms in deadlines]
    parts = [
        fixed.free if status == "available" else entry_json(fixed.prefix, status, None, expiry)
        for fixed, status, expiry in zip(seats.values(), statuses, expiries, strict=True)
    ]
    valid_until = min((ms for ms in deadlines if ms is not None), default=NEVER)
    rendered = Rendered(
        version, details, valid_until, seats, statuses, holders, expiries, parts, _array(parts)
    )
    rendered.exact = exact
    reused = cache_of(services).peek(screening_id)
    if reused is not None and reused.seats is seats:
        rendered.layout = reused.layout
    else:
        rendered.layout = layout_digest(seats)
    return rendered


def layout_digest(seats: dict[int, SeatJson]) -> bytes:
    """What the seats' fixed JSON (ids, rows, numbers, types) is, in 16 hex digits: a layout
    edited under the same version still changes the ETags, in every process alike."""
    digest = blake2b(digest_size=8)
    for fixed in seats.values():
        digest.update(fixed.prefix)
    return digest.hexdigest().encode()


def seat_json(
    cache: SeatMapCache[Rendered],
    screening_id: int,
    details: ScreeningSeats,
    states: dict[int, SeatState],
) -> dict[int, SeatJson]:
    """The fixed JSON pieces of the seats in the map, in map order.

    Reused from the cached map while the seat details are the same object.
    """
    cached = cache.peek(screening_id)
    if (
        cached is not None
        and cached.details is details
        and len(cached.seats) == len(states)
        and all(seat_id in states for seat_id in cached.seats)
    ):
        return cached.seats
    return {
        seat_id: _fixed(b'{"seat":' + dumps(_seat(info)) + b',"status":')
        for seat_id, info in details.seats.items()
        if seat_id in states
    }


def _fixed(prefix: bytes) -> SeatJson:
    return SeatJson(prefix, entry_json(prefix, "available", None, NULL))


def _seat(info: SeatInfo) -> SeatOut:
    return SeatOut(info.id, info.room_id, info.row_label, info.seat_number, info.seat_type)


def entry_json(prefix: bytes, status: str, reserved_by: int | None, expiry: bytes) -> bytes:
    """One seat's entry, byte for byte what msgspec makes of the SeatStatusOut."""
    holder = NULL if reserved_by is None else str(reserved_by).encode()
    return b"".join(
        (
            prefix,
            _STATUS.get(status) or dumps(status),
            b',"reserved_by":',
            holder,
            b',"expires_at":',
            expiry,
            b"}",
        )
    )


def _array(parts: list[bytes]) -> bytes:
    return b"[" + b",".join(parts) + b"]"


def _viewer(call: Call) -> int | None:
    return call.principal.user_id if call.principal is not None else None


def map_reply(
    scope: Scope,
    screening_id: int,
    rendered: Rendered,
    viewer: int | None,
    versioned: bool = False,
) -> Reply:
    """Every seat as ``viewer`` may see it, or a 304 when the client has that answer."""
    coding, tags = caching.negotiate(scope)
    if len(rendered.all_json) < MIN_SIZE:
        coding = None
    kind = ALL_V if versioned else ALL
    holder = viewer if viewer is not None and viewer in rendered.holders else None
    headers = rendered.headers(screening_id, kind, holder, coding)
    if tags is not None and rendered.tagged() and caching.matches(tags, headers[2][1]):
        return Reply(b"", headers, 304)
    if holder is None:
        body = rendered.plain(kind) if coding is None else rendered.compressed(kind, coding)
    else:  # a holder's own view: rare next to the public one, compressed on the fly
        body = rendered.for_viewer(holder)
        body = rendered.versioned(body) if versioned else body
        body = body if coding is None else caching.compress(body, coding)
    return Reply(body, headers)


def free_reply(
    scope: Scope, screening_id: int, rendered: Rendered, versioned: bool = False
) -> Reply:
    """The free seats (the same for every viewer), or a 304 when the client has them."""
    coding, tags = caching.negotiate(scope)
    kind = AVAILABLE_V if versioned else AVAILABLE
    plain = rendered.plain(kind)
    if len(plain) < MIN_SIZE:
        coding = None
    headers = rendered.headers(screening_id, kind, None, coding)
    if tags is not None and rendered.tagged() and caching.matches(tags, headers[2][1]):
        return Reply(b"", headers, 304)
    body = plain if coding is None else rendered.compressed(kind, coding)
    return Reply(body, headers)


def reply_headers(rendered: Rendered, etag: bytes, kind: bytes, coding: str | None) -> Headers:
    """Cache-Control, Vary, ETag (in that order), Content-Encoding and the map's version of one
    answer.

    Clients revalidate every time (no-cache): a seat map is live. Vary: Origin because an answer
    with Cache-Control may be stored (api/app.py BrowserCors); Authorization for the full map,
    whose holder's view differs. No ETag when the map is not known to be its version's state
    (version 0: Redis lacked the screening and this read loaded it; or a change landed while
    the map was read): the callers test ``tagged()`` before they read ``headers[2]``.
    X-Seat-Map-Version is the version read before the map: the map is at least that new (the
    same unless the answer has no ETag), so a WebSocket resumed from it misses nothing.
    """
    vary = VARY_ALL if kind[:1] == ALL else VARY_PUBLIC
    headers = [(b"cache-control", REVALIDATE), (b"vary", vary)]
    if rendered.tagged():
        headers.append((b"etag", etag))
    if coding is not None:
        headers.append((b"content-encoding", coding.encode()))
    headers.append((VERSION_HEADER, b"%d" % rendered.version))
    return headers


# Every seat map answer carries X-Seat-Map-Version; with ?with_version=true its body is the
# object ({"version", "seats"}) rather than the bare list.
SeatList = list[SeatStatusOut] | VersionedSeats


@router.get(
    "/api/v1/seat-reservations/screening/{screening_id:int}/availability",
    access="optional",
    query=MapQuery,
    response=SeatList,
)
async def availability(call: Call) -> Reply:
    """Every seat of a screening with its live status."""
    screening_id = call.params["screening_id"]
    rendered = await rendered_map(call.services, screening_id)
    versioned = call.query.with_version
    return map_reply(call.scope, screening_id, rendered, _viewer(call), versioned)


@router.get(
    "/api/v1/screenings/{screening_id:int}/available-seats",
    access="optional",
    query=MapQuery,
    response=SeatList,
)
async def available_seats(call: Call) -> Reply:
    """The seats of a screening that are free right now."""
    # Free seats have no holder, so this list is the same for every viewer.
    screening_id = call.params["screening_id"]
    rendered = await rendered_map(call.services, screening_id)
    return free_reply(call.scope, screening_id, rendered, call.query.with_version)


@router.get(
    "/api/v1/showtimes/{showtime_id:int}/seats",
    access="optional",
    query=MapQuery,
    response=SeatList,
)
async def showtime_seats(call: Call) -> Reply:
    """Every seat of a showtime (a screening) with its live status."""
    showtime_id = call.params["showtime_id"]
    rendered = await rendered_map(call.services, showtime_id)
    versioned = call.query.with_version
    return map_reply(call.scope, showtime_id, rendered, _viewer(call), versioned)
