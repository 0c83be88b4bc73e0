"""Per-process mirrors of contended screenings, so a hold that cannot succeed costs no Redis call.

On release day most hold attempts lose: thousands of people ask for the same few seats, and each
loser used to cost a hold script in Redis to learn that. Redis stays the only judge of a hold that
succeeds; a mirror only answers the refusals the hold script would give, for seats it knows to be
sold, or held by someone else for at least another MARGIN_MS. Anything else (a free seat, one of the
caller's own, an unknown seat, a hold about to lapse, a started screening) goes to Redis.

A mirror is exact up to the pub/sub delay of its events (under a millisecond; at most a loop
iteration under load), so a seat freed elsewhere may be refused for that long, as if the attempt had
come a moment earlier. It never grants anything. How it stays exact:

- It starts from one snapshot: states, version and start time read by one seatmap script.
- A hold granted to this process is known at once: the hold script returns the version it made,
  and until the mirror reaches that version the grant stands in for its event (``granted``). The
  losers of a race on this process learn of the winner without a round trip, as if the event had
  come back instantly; once the event is applied, the mirror alone decides again.
- An attempt for seats that a hold script of this process is already asking Redis for waits for
  that answer once (``in_flight``), then asks the mirror again: under contention most attempts
  that reach Redis are the losers of a race sent in the same moment as its winner.
- Every script publishes its changes with the screening's version after them, on a subscription
  this process already had when the snapshot was read, so every later change arrives, in order.
  Events at or below the snapshot's version are already in it; a gap in the versions (an event
  missed) or an event of another subscription (the hub reconnected) drops the mirror.
- A load, refresh or forget publishes a reset event: the mirror is dropped.
- Nothing announces a Redis that lost its data (a restart without persistence, FLUSHALL). A mirror
  is trusted for TRUST_MS after a snapshot or a hold script of this process last found the
  screening loaded; after that the next attempt goes to Redis, which answers NOT_LOADED after a
  loss (the mirror is dropped and the screening reloaded) or renews the trust.

A mirror is built when Redis refuses a hold (the screening is contended); at most SIZE screenings
are mirrored per process, the least recently used dropped first. Mirrors hold no lock and no task
on the request path: a refusal is a few dictionary lookups.
"""

from __future__ import annotations

import asyncio
import logging
from collections import OrderedDict
from collections.abc import Awaitable, Callable, Iterable
from dataclasses import dataclass
from typing import Any, Protocol

from redis.exceptions import RedisError

from seatlock.engine.model import Hold
from seatlock.engine.scripts import Status
from seatlock.errors import SeatLockError

logger = logging.getLogger(__name__)

MARGIN_MS = 50  # a hold lapsing sooner than this is left to Redis (its lease may be gone already)
TRUST_MS = 250  # longest a mirror refuses without a script of this process seeing the screening
SIZE = 512  # screenings mirrored per process


@dataclass(slots=True)
class SeatSnapshot:
    """A screening's seats as one seatmap script read them."""

    version: int
    starts_at_ms: int
    seats: set[int]
    sold: dict[int, int]  # seat -> buyer
    holds: dict[int, tuple[int, int]]  # seat -> (holder, expires_at ms): the index, lapsed or not


SnapshotReader = Callable[[int], Awaitable[SeatSnapshot | None]]  # None: not loaded


class Subscription(Protocol):
    """The event hub as mirrors see it (seatlock.engine.events.Hub)."""

    def hears(self, screening_id: int) -> int | None:
        """The epoch of the subscription, confirmed by Redis, that brings the screening's
        events (every event published since arrives); it changes when that subscription ends.
        None while there is none."""


class _Mirror:
    __slots__ = (
        "epoch",
        "granted",
        "holds",
        "in_flight",
        "seats",
        "sold",
        "starts_at_ms",
        "trusted_until",
        "version",
    )

    def __init__(self, snapshot: SeatSnapshot, epoch: int, trusted_until: int) -> None:
        self.version = snapshot.version
        self.starts_at_ms = snapshot.starts_at_ms
        self.seats = snapshot.seats
        self.sold = snapshot.sold
        self.holds = snapshot.holds
        self.epoch = epoch
        self.trusted_until = trusted_until
        # Holds granted to this process whose events are not applied yet: seat -> (holder,
        # expires_at ms, version the hold made). An entry counts while its version is ahead of
        # the mirror's and goes when an event of its seat is applied (one per seat at most).
        self.granted: dict[int, tuple[int, int, int]] = {}
        # Seat -> the answer of this process's latest hold script for it, while under way.
        self.in_flight: dict[int, asyncio.Future[None]] = {}

    def apply(self, event: dict[str, Any], epoch: int) -> bool:
        """Apply one published event; False when the mirror can no longer be trusted."""
        version = event.get("version")
        if event.get("reset") or epoch != self.epoch or not isinstance(version, int):
            return False
        if version <= self.version:
            return True  # already in the snapshot
        if version != self.version + 1:
            return False  # an event went missing
        self.version = version
        granted = self.granted
        for change in event["seats"]:
            seat, status = change["seat_id"], change["status"]
            if granted and (grant := granted.get(seat)) is not None and grant[2] <= version:
                del granted[seat]  # the mirror knows as much as the grant, or more
            if status == "reserved":
                self.holds[seat] = (change["user_id"], change["expires_at"])
            elif status == "booked":
                self.sold[seat] = change["user_id"]
                self.holds.pop(seat, None)
            else:  # available: released, expired, swept or unsold
                self.holds.pop(seat, None)
                self.sold.pop(seat, None)
        return True

    def grant(self, user_id: int, holds: Iterable[Hold], version: int) -> None:
        for hold in holds:
            self.granted[hold.seat_id] = (user_id, hold.expires_at_ms, version)


class SeatMirrors:
    """This process's mirrors, fed by the hub's events (``on_event``) and told by the engine what
    its hold scripts found (``confirmed``, ``contended``, ``drop``)."""

    def __init__(
        self,
        read_snapshot: SnapshotReader,
        subscription: Subscription,
        *,
        trust_ms: int = TRUST_MS,
        size: int = SIZE,
    ) -> None:
        self._read_snapshot = read_snapshot
        self._subscription = subscription
        self._trust_ms = trust_ms
        self._size = size
        self._mirrors: OrderedDict[int, _Mirror] = OrderedDict()
        self._building: dict[int, list[dict[str, Any]]] = {}  # events that arrive meanwhile
        self._tasks: set[asyncio.Task[None]] = set()
        self.refusals = 0  # holds refused here instead of in Redis

    def __contains__(self, screening_id: int) -> bool:
        return screening_id in self._mirrors

    def refusal(self, screening_id: int, user_id: int, seats: list[int], now: int) -> list[int]:
        """The hold script's refusal of ``seats`` ({status, seat...}) when the mirror is sure of
        it, else [] (ask Redis). ``seats`` are sorted and distinct, like the script's ARGV."""
        mirror = self._mirrors.get(screening_id)
        if mirror is None or now >= mirror.trusted_until or now >= mirror.starts_at_ms:
            return []
        if mirror.epoch != self._subscription.hears(screening_id):
            self.drop(screening_id)
            return []
        room, sold, holds, granted = mirror.seats, mirror.sold, mirror.holds, mirror.granted
        booked: list[int] = []
        taken: list[int] = []
        unsure = False
        hold: tuple[int, ...] | None
        for seat in seats:
            if seat not in room:
                return []  # the script answers UNKNOWN first
            hold = granted.get(seat) if granted else None
            if hold is None or hold[2] <= mirror.version:  # no grant newer than the mirror
                if seat in sold:
                    booked.append(seat)
                    continue
                hold = holds.get(seat)
            if hold is not None and hold[0] != user_id:
                if hold[1] > now + MARGIN_MS:
                    taken.append(seat)
                else:
                    unsure = True
        self._mirrors.move_to_end(screening_id)
        if booked:
            refused = [Status.BOOKED, *booked]
        elif taken and not unsure:
            refused = [Status.TAKEN, *taken]
        else:
            return []
        self.refusals += 1
        return refused

    def wants(self, screening_id: int) -> bool:
        """Are the screening's events needed (mirrored, or a mirror being built)? The hub parses
        and passes on only those (``Hub.screening_listeners``); ``on_event`` ignores the rest.
        A build starts (``contended``) before its snapshot is read, so every event the snapshot
        may miss is wanted: none a mirror needs is skipped."""
        return screening_id in self._mirrors or screening_id in self._building

    def on_event(self, screening_id: int, event: dict[str, Any]) -> None:
        """One event of the hub's subscription, in publish order."""
        pending = self._building.get(screening_id)
        if pending is not None:
            pending.append(event)
            return
        mirror = self._mirrors.get(screening_id)
        epoch = self._subscription.hears(screening_id)
        if mirror is not None and (epoch is None or not mirror.apply(event, epoch)):
            del self._mirrors[screening_id]

    def granted(self, screening_id: int, user_id: int, holds: Iterable[Hold], version: int) -> None:
        """This process's hold script granted ``holds`` to ``user_id``, making ``version``."""
        mirror = self._mirrors.get(screening_id)
        if mirror is not None and version > mirror.version:
            mirror.grant(user_id, holds, version)

    def in_flight(self, screening_id: int, seats: list[int]) -> asyncio.Future[None] | None:
        """Done when a hold script of this process asking for some of ``seats`` is answered."""
        mirror = self._mirrors.get(screening_id)
        if mirror is None or not mirror.in_flight:
            return None
        for seat in seats:
            answer = mirror.in_flight.get(seat)
            if answer is not None:
                return answer
        return None

    def sending(self, screening_id: int, seats: list[int]) -> asyncio.Future[None] | None:
        """A hold script for ``seats`` is being sent; ``answered`` must follow (None: no mirror)."""
        mirror = self._mirrors.get(screening_id)
        if mirror is None:
            return None
        answer = asyncio.get_running_loop().create_future()
        for seat in seats:
            mirror.in_flight[seat] = answer
        return answer

    def answered(self, screening_id: int, seats: list[int], answer: asyncio.Future[None]) -> None:
        """The hold script announced by ``sending`` returned (a grant is recorded before)."""
        answer.set_result(None)
        mirror = self._mirrors.get(screening_id)
        if mirror is not None:
            for seat in seats:
                if mirror.in_flight.get(seat) is answer:
                    del mirror.in_flight[seat]

    def confirmed(self, screening_id: int, at_ms: int) -> None:
        """A hold script sent at ``at_ms`` found the screening loaded."""
        mirror = self._mirrors.get(screening_id)
        if mirror is not None:
            mirror.trusted_until = max(mirror.trusted_until, at_ms + self._trust_ms)

    def contended(self, screening_id: int, now: int) -> None:
        """Redis refused a hold: mirror the screening, unless it is or is being mirrored."""
        if screening_id in self._mirrors or screening_id in self._building:
            return
        if self._subscription.hears(screening_id) is None:
            return  # its events do not reach this process (sharded pub/sub: no watcher here)
        self._building[screening_id] = []
        task = asyncio.create_task(self._build(screening_id, now))
        self._tasks.add(task)
        task.add_done_callback(self._tasks.discard)

    def drop(self, screening_id: int) -> None:
        """The screening was (re)loaded, rewritten or forgotten here: stop mirroring it."""
        self._mirrors.pop(screening_id, None)
        self._building.pop(screening_id, None)  # a build under way is discarded

    async def _build(self, screening_id: int, now: int) -> None:
        epoch = self._subscription.hears(screening_id)
        try:
            snapshot = await self._read_snapshot(screening_id)
        except (SeatLockError, RedisError, OSError) as exc:
            logger.debug("no mirror of screening %s: %r", screening_id, exc)
            snapshot = None
        finally:
            pending = self._building.pop(screening_id, None)
        if snapshot is None or pending is None or epoch is None:
            return
        if self._subscription.hears(screening_id) != epoch:
            return
        mirror = _Mirror(snapshot, epoch, now + self._trust_ms)
        if all(mirror.apply(event, epoch) for event in pending):
            self._mirrors[screening_id] = mirror
            while len(self._mirrors) > self._size:
                self._mirrors.popitem(last=False)

    async def aclose(self) -> None:
        for task in list(self._tasks):
            task.cancel()
        await asyncio.gather(*self._tasks, return_exceptions=True)
