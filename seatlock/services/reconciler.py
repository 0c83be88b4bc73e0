"""The reconciler: Redis's sold seats of every loaded screening brought back to PostgreSQL's.

PostgreSQL is the final judge (invariant 5); Redis's sold seats are a copy that a lost answer, a
Redis outage during a booking's marking, or a cancellation whose unsell failed can leave wrong.
Each pass reads, per batch of loaded screenings, Redis's sold seats (one round trip) and then
PostgreSQL's active tickets (one query), and repairs Redis with the idempotent sell and unsell
scripts, which publish the corrected seats to watchers (invariant 8).

Order matters: Redis is read before PostgreSQL. A booking marks its seats sold only after its
COMMIT, and a cancellation frees its seat only after its COMMIT, so a seat sold in Redis at the
first read is either committed by the second or its ticket's cancellation is (or was) freeing it.
A ticket booked in the last ``settle_s`` seconds is not marked sold by a pass, and the seat of a
ticket cancelled or refunded in the last ``settle_s`` seconds is not freed by one: the booking or
cancellation is marking Redis itself (at once, or retried in the background until Redis takes
it). A pass acting on them could only repeat that, or undo a newer change of the seat: it once
freed a seat that was cancelled and sold again while the pass ran (a seat on sale while sold),
and sold the seat of a ticket cancelled between its two queries, which are one statement now
(``repo.sales_to_reconcile``). ``python -m loadtests.soak``, whose users cancel what they book
at once, met both races every pass. A booking or cancellation whose process died before marking
Redis is repaired by the first pass after. What remains is a real mismatch changed again during
the pass (an old ticket cancelled between the query and the sell): the next pass repairs it.
A Redis that restarted (its run id changed: a restart from an older AOF or RDB, a restart with
no data, a failover to a replica that lagged) may have gone back in time with the screenings still
loaded, so no reload from PostgreSQL happens: sales made since its snapshot are missing (those
seats on sale again), cancellations undone. Each process asks Redis's run id every
``RESTART_CHECK_S`` (``_restarted``) and, when it changed, passes at once, without waiting for its
turn (the turn's key may have come back from the snapshot, held by a process gone since): the
seats of tickets booked in the last ``settle_s`` seconds are marked sold too, as the restart undid
the marking their bookings did (too many sold is safe; a later pass frees one wrongly kept).
A loaded screening PostgreSQL no longer has was deleted since that snapshot, which brought its
keys back without its tombstone: the pass forgets it again. Then the pass moves each loaded
screening's version past those Redis handed out before it
restarted (lua/renumber.lua; only where it is older than the restart, so the processes that all
noticed it renumber a screening once): its watchers, who may have seen higher versions than the
snapshot kept, would take its maps for stale ones. Each is sent the map again.
Every API process runs one, and the processes sharing a Redis take turns (``_my_turn``): one
pass an interval between them, not one each. A pass over 10,000 loaded screenings of 50 sold seats
took a worker ~0.9 s of CPU; eight processes made eight such passes every 30 s. A pass of another
process at the same time (its turn lapsed while it still ran) only repeats idempotent scripts.
"""

from __future__ import annotations

import asyncio
import logging
import random
import secrets

import asyncpg
from redis.exceptions import RedisError

from db import catalog
from db import tickets as repo
from db.pool import DATABASE_FAILED
from seatlock import keys
from seatlock.engine.cluster import ClusterTransport
from seatlock.engine.seats import SeatEngine
from seatlock.engine.transport import REDIS_DOWN, Transport, answered
from seatlock.errors import SeatLockError, Unavailable
from seatlock.heartbeats import Beat, no_beat, pause
from seatlock.metrics import RECONCILE_PASSES, RECONCILE_REPAIRS

logger = logging.getLogger(__name__)

# Screenings per round trip and per query. The rows of a batch are read in one go, which keeps
# the event loop from serving requests meanwhile: 100 screenings of 50 sold seats, 4-7 ms (with
# 500, 17 ms; 500 of 100 sold, 32 ms).
BATCH = 100
SETTLE_S = 10.0  # a ticket this young is left to its booking's own marking
RETRY_S = 1.0  # after a failed pass, try again this soon: the first that works runs at once
RESTART_CHECK_S = 1.0  # how often Redis's run id is asked (``_restarted``): one INFO each time
CLUSTER_CHECKS = 10  # a cluster's primaries are asked every CLUSTER_CHECKS-th time (a connection
# to each, ``on_primaries``)
# The turn: the process that set it passes, the others leave the interval's pass to it. It lasts
# 0.9 of the interval, the least a process waits between two passes (its jitter), so a process
# whose wait ends finds it over unless another process took it since.
TURN = keys.rate_limit("reconcile")
TURN_SHARE = 0.9
# What makes a pass fail and retried soon: PostgreSQL or Redis cannot answer.
BACKEND_DOWN: tuple[type[Exception], ...] = (*DATABASE_FAILED, RedisError, Unavailable)


class Reconciler:
    """Repairs Redis's sold seats from PostgreSQL, periodically; one per process."""

    def __init__(
        self, engine: SeatEngine, db: asyncpg.Pool, *, interval_s: float, settle_s: float = SETTLE_S
    ) -> None:
        self.engine = engine
        self.db = db
        self.interval_s = interval_s  # 0: never on its own (``reconcile`` still works)
        self.settle_s = settle_s
        self.repairs = 0  # screenings repaired so far (one log line each), for metrics
        self.seats_repaired = 0  # seats sold or freed by those repairs
        self.passes = 0  # passes completed
        self.token = secrets.token_hex(8)  # this process's mark on the turn it takes
        self.failing = False  # the last pass failed: a backend was down
        # Redis's run ids as last read (None: not yet), and whether it restarted since the last
        # pass that worked: the next pass is then a restart's (see the module's note).
        self.run_ids: frozenset[str] | None = None
        self.restarted = False
        self.restarted_at_ms = 0  # when the last restarted server started, on Redis's clock
        self._checks = 0

    async def run(self, stop: asyncio.Event, beat: Beat = no_beat) -> None:
        """A pass at once, then every ``interval_s`` (with jitter, so processes spread out), and
        RETRY_S after a failed one: after an outage, the first pass that works repairs Redis;
        at once when Redis restarted meanwhile."""
        if self.interval_s <= 0:
            return
        await self._restarted()  # the run ids to compare with
        while not stop.is_set():
            wait = self._jittered() if await self._pass() else min(RETRY_S, self.interval_s)
            beat()
            await self._wait(stop, wait, beat)

    async def _wait(self, stop: asyncio.Event, seconds: float, beat: Beat) -> None:
        """Wait ``seconds``, or until Redis is found restarted (asked every RESTART_CHECK_S)."""
        deadline = asyncio.get_running_loop().time() + seconds
        while not stop.is_set():
            left = deadline - asyncio.get_running_loop().time()
            if left <= 0:
                return
            await pause(stop, min(left, RESTART_CHECK_S), beat)
            if await self._restarted():
                return

    async def _restarted(self) -> bool:
        """Whether Redis restarted since its run ids were last read (``restarted`` stays set
        until a pass worked). Unanswered (down, loading its data): no change is known yet."""
        self._checks += 1
        cluster = isinstance(self.engine.transport, ClusterTransport)
        if cluster and self._checks % CLUSTER_CHECKS != 1 and self.run_ids is not None:
            return self.restarted
        try:
            servers = await _servers(self.engine.transport)
        except BACKEND_DOWN as exc:
            logger.debug("no run id of Redis to be had: %r", exc)
            return self.restarted
        run_ids = frozenset(run_id for run_id, _ in servers)
        if self.run_ids is not None and run_ids != self.run_ids:
            logger.warning("Redis restarted (its run id changed): reconciling its sold seats now")
            self.restarted = True
            # Redis counts its uptime in whole seconds of its clock: the start is at most a
            # second later than now - uptime. The latest it can be, so that every version the
            # old server handed out is older (lua/renumber.lua).
            now_ms = self.engine.now_ms()
            self.restarted_at_ms = max(now_ms - up_s * 1000 for _, up_s in servers) + 1000
        self.run_ids = run_ids
        return self.restarted

    async def _pass(self) -> bool:
        try:
            restarted = self.restarted
            if not restarted and not await self._my_turn():
                RECONCILE_PASSES.labels("elsewhere").inc()
                return True
            await self.reconcile(restarted=restarted)
            if restarted:
                self.restarted = False
        except BACKEND_DOWN as exc:
            RECONCILE_PASSES.labels("failed").inc()
            if not self.failing:
                logger.warning("reconcile pass failed, retrying every %.0f s: %r", RETRY_S, exc)
            self.failing = True
            return False
        RECONCILE_PASSES.labels("ok").inc()
        if self.failing:
            logger.warning("reconcile pass works again after an outage")
        self.failing = False
        return True

    async def _my_turn(self) -> bool:
        """Whether this process passes now: it takes the turn, or it has it already (a failed
        pass retried: the others wait until it works, or until the turn lapses)."""
        ttl_ms = max(1, int(self.interval_s * TURN_SHARE * 1000))
        transport = self.engine.transport
        try:
            if await transport.command("SET", TURN, self.token, "PX", ttl_ms, "NX") is not None:
                return True
            holder = await transport.command("GET", TURN)
        except REDIS_DOWN as exc:
            # The turn's node does not answer (one primary of a cluster): every process passes,
            # as before turns, and repairs the screenings of the nodes that do.
            logger.debug("no reconcile turn to be had (%r): passing anyway", exc)
            return True
        return holder in (self.token, self.token.encode())

    def _jittered(self) -> float:
        return self.interval_s * random.uniform(0.9, 1.1)

    async def reconcile(self, *, restarted: bool = False) -> int:
        """One pass over every loaded screening; returns how many were repaired. ``restarted``:
        Redis restarted, so even the sales still settling are marked (see the module's note)."""
        loaded = await self.engine.loaded_screenings()
        repaired = 0
        for start in range(0, len(loaded), BATCH):
            batch = loaded[start : start + BATCH]
            if restarted:
                batch = await self._forget_deleted(batch)
            repaired += await self._reconcile_batch(batch, restarted)
            if restarted:  # after the repair: the map its watchers are sent has the sales
                since = self.restarted_at_ms
                await asyncio.gather(*(self.engine.renumber(sid, since) for sid in batch))
        self.passes += 1
        return repaired

    async def _forget_deleted(self, screening_ids: list[int]) -> list[int]:
        """The screenings PostgreSQL still has; the others, deleted since the snapshot Redis came
        back from (their keys and no tombstone back with it), are forgotten again: they took
        holds. The rest of ``screening_ids``."""
        gone = set(await catalog.missing_screenings(self.db, screening_ids))
        for screening_id in sorted(gone):
            logger.warning("screening %s was deleted: forgotten again in Redis", screening_id)
            await self.engine.forget(screening_id)
        return [sid for sid in screening_ids if sid not in gone]

    async def _reconcile_batch(self, screening_ids: list[int], restarted: bool = False) -> int:
        in_redis = await self._sold_where_answered(screening_ids)  # first: see the module's note
        in_postgres, settling = await repo.sales_to_reconcile(self.db, screening_ids, self.settle_s)
        repaired = 0
        for screening_id, sold in zip(screening_ids, in_redis, strict=True):
            if sold is None:  # not loaded: its next load reads PostgreSQL anyway
                continue
            try:
                repaired += await self._repair(
                    screening_id,
                    sold,
                    in_postgres.get(screening_id, {}),
                    settling.get(screening_id, set()),
                    restarted,
                )
            except Unavailable:
                raise
            except SeatLockError as exc:  # e.g. deleted meanwhile: nothing left to repair
                logger.warning("screening %s not reconciled: %r", screening_id, exc)
        return repaired

    async def _sold_where_answered(self, screening_ids: list[int]) -> list[dict[int, int] | None]:
        """Redis's sold seats per screening; None when not loaded, or when its node does not
        answer (one Redis Cluster primary): the other screenings are repaired all the same. When
        no screening's node answers, the pass fails."""
        replies, down = await answered(self.engine.sold_seats([sid]) for sid in screening_ids)
        sold = [None if reply is None else reply[0] for reply in replies]
        if down and len(down) == len(screening_ids):
            raise down[0]
        if down:
            logger.warning(
                "reconcile pass skipped %d of %d screenings: their Redis node did not answer",
                len(down),
                len(screening_ids),
            )
        return sold

    async def _repair(
        self,
        screening_id: int,
        sold: dict[int, int],
        truth: dict[int, int],
        settling: set[int],
        restarted: bool = False,
    ) -> int:
        """Make Redis's sold seats of one screening PostgreSQL's, but for the ``settling`` seats
        (left to their bookings and cancellations; after a restart only those to free: the
        restart may have undone a booking's marking, never a cancellation's freeing that is
        still to come); 1 if anything changed."""
        missing = {
            seat: user
            for seat, user in truth.items()
            if sold.get(seat) != user and (restarted or seat not in settling)
        }
        extra = sorted(seat for seat in sold if seat not in truth and seat not in settling)
        if not missing and not extra:
            return 0
        await self.engine.sell(screening_id, missing)
        await self.engine.unsell(screening_id, extra)
        self.repairs += 1
        RECONCILE_REPAIRS.inc()
        self.seats_repaired += len(missing) + len(extra)
        logger.warning(
            "reconciled screening %s with PostgreSQL: marked sold %s, freed %s",
            screening_id,
            sorted(missing),
            extra,
        )
        return 1


async def _servers(transport: Transport) -> list[tuple[str, int]]:
    """The run id and uptime (s) of each Redis server (every primary of a cluster): a server's
    run id changes when it restarted, and a failover puts another in its place."""
    if isinstance(transport, ClusterTransport):
        replies = await transport.on_primaries("INFO", "server")
    else:
        replies = [await transport.command("INFO", "server")]
    return [_server(reply) for reply in replies]


def _server(info: bytes | str) -> tuple[str, int]:
    text = info.decode() if isinstance(info, bytes) else info
    fields = dict(line.partition(":")[::2] for line in text.splitlines() if ":" in line)
    return fields.get("run_id", "").strip(), int(fields.get("uptime_in_seconds", "0") or 0)
