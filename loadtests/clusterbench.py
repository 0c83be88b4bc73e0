"""The cluster part of ``seatlock bench``: one Redis against a 3-primary Redis Cluster, same box.

Holds spread over many screenings (``SCREENINGS`` of ``SEATS`` seats; 1-4 neighbouring seats in a
random screening, each hold won released again, so nearly every hold wins) run as
``SeatEngine.hold`` in the generator processes, no HTTP, against throw-away servers this module
starts on free loopback ports and stops again:

- (a) one redis-server against a cluster of 3 primaries without replicas, each on the fast
  transport (the cluster's: a connection of ours to each primary) and on the redis-py one (the
  cluster's: redis-py's cluster pipelines), taking turns: holds/s,
  p50/p99 and the engine process's CPU per hold flat out; then Redis's CPU per hold with every
  node as busy (the cluster paced at 3 times the one Redis's holds/s), since a node that serves
  fewer holds/s gets shorter pipelines and costs more per hold. A node's CPU comes from its
  process (INFO CPU: background work like the cluster bus counts too) and is divided by
  the holds its screenings took: the per-node figures a capacity model needs. The verdict row
  divides the cluster's Redis CPU per hold by the one node's.
- (b) the engine with ``SEATLOCK_HOLD_REPLICAS`` 0 and 1 on a cluster of 3 primaries with a
  replica each, taking turns: what waiting for a replica's WAIT costs a hold.

The CPU per hold includes the release of each hold won (a script call like the hold itself).
Figures on a shared machine are noisy: the ratios, measured in the same turns, are what to read.
"""

from __future__ import annotations

import asyncio
import concurrent.futures
import contextlib
import multiprocessing
import random
import time
from collections.abc import Iterator, Sequence
from dataclasses import dataclass, field, replace
from typing import Any, Self

from redis import Redis

from loadtests.benchreport import Report, Row, ms, pct
from loadtests.loadgen import end_with_the_bench, yield_to_the_server
from seatlock.process import settle_garbage_collector
from seatlock.server.embedded import free_port
from seatlock.server.localcluster import LocalCluster
from seatlock.server.redisnodes import RedisNodes, scratch_root

SCREENINGS = 240  # spread over the primaries by their hash tags' slots
SEATS = 100  # per screening
MAX_SEATS = 4  # a hold takes 1-4 neighbouring seats
HOLD_MS = 60_000
REPLICA_TIMEOUT_MS = 200  # Settings.hold_replicas_timeout_ms's default
MAX_COST_RATIO = 1.10  # the cluster's Redis CPU per hold against one Redis's
COST_TARGET = f"<= {MAX_COST_RATIO:.2f}"
PACE_SHARE = 0.5  # Redis CPU per hold is compared at this share of the slowest holds/s a node
NODE_OPTIONS = ("--notify-keyspace-events", "Ex", "--hz", "100")  # as every cluster node has


@dataclass(frozen=True)
class Plan:
    """How long and how hard: from the bench's Config (``from_bench``)."""

    seconds: float  # per row (each run of it), split in ``turns``
    turns: int
    generators: int
    connections: int  # concurrent holds per generator process
    start_s: float = 0.3  # Config.start_s

    @classmethod
    def from_bench(cls, config: Any) -> Plan:
        """A quarter of the bench's duration per row (5 s by default: about a minute in all)."""
        seconds = max(0.25, config.duration / 4)
        return cls(
            seconds, config.turns, config.generator_count, config.connections, config.start_s
        )


# --- The generator side ------------------------------------------------------------------------


@dataclass(frozen=True)
class Job:
    url: str  # redis://... or redis+cluster://...
    transport: str  # Settings.redis_transport
    replicas: int  # SEATLOCK_HOLD_REPLICAS
    start_at: float  # wall clock
    duration: float
    connections: int
    first_user: int
    pace: float = 0.0  # holds/s of this process, spread over its connections (0: flat out)


@dataclass
class Result:
    """What one or more generator runs saw: attempts, latencies, their own CPU, and the attempts
    per screening (to credit each node with the holds its screenings took)."""

    ops: int = 0
    won: int = 0
    behind: int = 0  # 503: too few replicas confirmed the hold in time
    latencies_ms: list[float] = field(default_factory=list)
    cpu_s: float = 0.0
    per_screening: dict[int, int] = field(default_factory=dict)

    def merge(self, other: Result) -> Self:
        self.ops += other.ops
        self.won += other.won
        self.behind += other.behind
        self.latencies_ms += other.latencies_ms
        self.cpu_s += other.cpu_s
        for sid, n in other.per_screening.items():
            self.per_screening[sid] = self.per_screening.get(sid, 0) + n
        return self


def generator_main(job: Job) -> Result:
    """Entry point of a generator process (like ``loadgen.generator_main``)."""
    settle_garbage_collector()
    yield_to_the_server()
    with contextlib.suppress(ImportError):
        import uvloop

        return uvloop.run(run_job(job))
    return asyncio.run(run_job(job))


async def spread_layout(screening_id: int) -> Any:
    """The LayoutSource of the bench's screenings: SEATS seats, none sold, starting tomorrow."""
    from seatlock.engine.model import Layout

    return Layout(int(time.time() * 1000) + 86_400_000, list(range(1, SEATS + 1)), {})


def open_engine(job: Job) -> Any:
    """A SeatEngine on the job's Redis, built like the app builds it (wiring.redis_client)."""
    from redis.asyncio import Redis
    from redis.asyncio.cluster import ClusterNode, RedisCluster

    from seatlock.engine.seats import SeatEngine
    from seatlock.engine.transport import Replicas, open_transport
    from seatlock.settings import redis_cluster_nodes

    cluster = redis_cluster_nodes(job.url)
    if cluster is None:
        redis: Redis | RedisCluster = Redis.from_url(job.url)
    else:
        redis = RedisCluster(startup_nodes=[ClusterNode(h, p) for h, p in cluster.nodes])
    replicas = Replicas(job.replicas, REPLICA_TIMEOUT_MS) if job.replicas else None
    transport = open_transport(job.transport, redis)
    engine = SeatEngine(
        transport,
        spread_layout,
        hold_ms=HOLD_MS,
        max_hold_ms=10 * HOLD_MS,
        max_seats_per_user=10,
        replicas=replicas,
    )
    return engine, redis


async def run_job(job: Job) -> Result:
    engine, redis = open_engine(job)
    result = Result()
    try:
        await asyncio.sleep(max(0.0, job.start_at - time.time()))
        deadline = time.perf_counter() + job.duration
        cpu = time.process_time()
        users = range(job.first_user, job.first_user + job.connections)
        gap = job.connections / job.pace if job.pace else 0.0
        loops = (hold_loop(engine, user, deadline, gap, result) for user in users)
        await asyncio.gather(*loops)
        result.cpu_s = time.process_time() - cpu
    finally:
        await engine.transport.aclose()
        await redis.aclose()
    return result


async def hold_loop(engine: Any, user: int, deadline: float, gap: float, result: Result) -> None:
    """Hold attempts until the deadline. With ``gap``, one every ``gap`` seconds (from a random
    offset, so the connections do not march in step; the count due is duration/gap); otherwise
    the next as soon as the last was answered."""
    due = time.perf_counter() + random.random() * gap
    while (now := time.perf_counter()) < deadline:
        if gap:
            if due >= deadline:
                return
            await asyncio.sleep(max(0.0, due - now))
            due += gap
        await attempt(engine, user, result)


async def attempt(engine: Any, user: int, result: Result) -> None:
    """Hold 1-4 neighbouring seats of a random screening; release them again if won."""
    from seatlock.engine.errors import SeatsUnavailable
    from seatlock.engine.seats import ReplicasBehind

    sid = 1 + int(random.random() * SCREENINGS)
    count = 1 + int(random.random() * MAX_SEATS)
    first = 1 + int(random.random() * (SEATS - count + 1))
    seats = list(range(first, first + count))
    started = time.perf_counter()
    won = False
    try:
        await engine.hold(sid, user, seats)
        won = True
    except SeatsUnavailable:
        pass
    except ReplicasBehind:
        result.behind += 1
    result.latencies_ms.append((time.perf_counter() - started) * 1000)
    result.ops += 1
    result.per_screening[sid] = result.per_screening.get(sid, 0) + 1
    if won:
        result.won += 1
        await engine.release(sid, user, seats)


async def warm(url: str, transport: str) -> None:
    """One hold and release per screening, unmeasured: every layout is loaded before the runs."""
    engine, redis = open_engine(Job(url, transport, 0, 0.0, 0.0, 1, 1))
    try:
        screenings = range(1, SCREENINGS + 1)
        await asyncio.gather(*(engine.hold(sid, 1, [SEATS]) for sid in screenings))
        await asyncio.gather(*(engine.release(sid, 1, [SEATS]) for sid in screenings))
    finally:
        await engine.transport.aclose()
        await redis.aclose()


# --- The servers --------------------------------------------------------------------------------


@dataclass
class LocalRedis(RedisNodes):
    """One redis-server, configured like a cluster node but for cluster mode."""

    def start(self) -> Self:
        port = free_port()
        self.ports.append(port)
        self.procs.append(self._spawn(port, *NODE_OPTIONS))
        self._wait(lambda: self._pings(port), f"redis-server on {port}")
        return self

    @property
    def url(self) -> str:
        return f"redis://127.0.0.1:{self.ports[0]}"


def cpu_seconds(port: int) -> float:
    """The CPU a redis-server used so far, user and system, all its threads (INFO CPU: from
    getrusage, finer than /proc's 10 ms ticks, which a short run can round to nothing)."""
    with Redis(host="127.0.0.1", port=port, socket_timeout=5) as node:
        info = node.info("cpu")
    return float(info["used_cpu_sys"]) + float(info["used_cpu_user"])


@dataclass
class Target:
    """Something measured: a Redis setup and how the engine reaches it. ``nodes`` are the ports
    of the primaries whose CPU is counted; ``node_of`` the port of each screening's primary."""

    name: str
    url: str
    transport: str
    replicas: int
    nodes: list[int]
    node_of: dict[int, int]
    result: Result = field(default_factory=Result)
    node_cpu_s: dict[int, float] = field(default_factory=dict)
    seconds: float = 0.0
    pace: float = 0.0  # holds/s of all generators together (0: flat out)

    def paced(self, pace: float) -> Target:
        """The same target, measured anew at ``pace`` holds/s."""
        return replace(self, result=Result(), node_cpu_s={}, seconds=0.0, pace=pace)

    def cpu_now(self) -> dict[int, float]:
        return {port: cpu_seconds(port) for port in self.nodes}

    def holds_by_node(self) -> dict[int, int]:
        holds = dict.fromkeys(self.node_cpu_s, 0)
        for sid, n in self.result.per_screening.items():
            holds[self.node_of[sid]] = holds.get(self.node_of[sid], 0) + n
        return holds

    @property
    def redis_us(self) -> float:
        """Redis CPU per hold attempt, all nodes together (us)."""
        return per_hold(sum(self.node_cpu_s.values()), self.result.ops)

    @property
    def client_us(self) -> float:
        return per_hold(self.result.cpu_s, self.result.ops)

    @property
    def rate(self) -> float:
        return self.result.ops / self.seconds if self.seconds else 0.0


def per_hold(cpu_s: float, holds: int) -> float:
    return cpu_s * 1e6 / holds if holds else float("nan")


def single_target(redis: LocalRedis, transport: str) -> Target:
    port = redis.ports[0]
    screenings = dict.fromkeys(range(1, SCREENINGS + 1), port)
    name = f"one Redis, {transport} transport"
    return Target(name, redis.url, transport, 0, [port], screenings)


def cluster_target(cluster: LocalCluster, name: str, replicas: int = 0) -> Target:
    """The cluster's primaries and which one holds each screening (the slot of its hash tag, as
    the cluster's CLUSTER SLOTS assigns it)."""
    from redis.crc import key_slot

    from seatlock import keys

    with cluster.client(cluster.primary_ports[0]) as node:
        ranges = [(r[0], r[1], int(r[2][1])) for r in node.execute_command("CLUSTER SLOTS")]

    def owner(screening_id: int) -> int:
        slot = key_slot(keys.screening_meta(screening_id).encode())
        return next(port for first, last, port in ranges if first <= slot <= last)

    node_of = {sid: owner(sid) for sid in range(1, SCREENINGS + 1)}
    return Target(name, cluster.url, "fast", replicas, cluster.primary_ports, node_of)


# --- The runs -----------------------------------------------------------------------------------


class ClusterBench:
    def __init__(self, plan: Plan) -> None:
        self.plan = plan
        self.rows: list[Row] = []
        self.notes: list[str] = []

    async def run(self) -> tuple[list[Row], list[str]]:
        with self.pool() as pool:
            self.executor = pool
            await self.single_vs_cluster()
            await self.replicas()
        return self.rows, self.notes

    @contextlib.contextmanager
    def pool(self) -> Iterator[concurrent.futures.ProcessPoolExecutor]:
        context = multiprocessing.get_context("spawn")
        pool = concurrent.futures.ProcessPoolExecutor(
            self.plan.generators, context, initializer=end_with_the_bench
        )
        try:
            yield pool
        finally:
            pool.shutdown(cancel_futures=True)

    async def single_vs_cluster(self) -> None:
        with (
            LocalRedis(scratch_root("seatlock-bench-redis-")) as redis,
            LocalCluster(scratch_root("seatlock-bench-cluster-"), replicas_each=0) as cluster,
        ):
            fast, plain = single_target(redis, "fast"), single_target(redis, "redis-py")
            spread = cluster_target(cluster, "3-primary cluster, fast transport")
            name = "3-primary cluster, redis-py transport"
            pipelined = replace(spread.paced(0.0), name=name, transport="redis-py")
            await self.in_turns([fast, plain, spread, pipelined])
            # Redis's CPU per hold with every node as busy as the one Redis: a node that serves
            # fewer holds/s gets shorter pipelines, which cost more per call (a read and a
            # write per pipeline), and its background work (cluster bus, cron) weighs more.
            node_pace = PACE_SHARE * min(fast.rate, plain.rate, spread.rate / len(spread.nodes))
            paced = [fast.paced(node_pace), plain.paced(node_pace)]
            paced.append(spread.paced(node_pace * len(spread.nodes)))
            await self.in_turns(paced)
        self.holds_rows([fast, plain, spread, pipelined])
        self.cost_rows([fast, plain, spread, pipelined], paced)

    async def replicas(self) -> None:
        with LocalCluster(scratch_root("seatlock-bench-cluster-"), replicas_each=1) as cluster:
            none = cluster_target(cluster, "3 primaries + 3 replicas, SEATLOCK_HOLD_REPLICAS=0")
            one = cluster_target(cluster, "3 primaries + 3 replicas, SEATLOCK_HOLD_REPLICAS=1", 1)
            await self.in_turns([none, one])
        self.holds_rows([none, one])
        self.rows.append(
            Row(
                "Cluster holds: SEATLOCK_HOLD_REPLICAS=1 / =0",
                f"{one.rate:,.0f} / {none.rate:,.0f} holds/s",
                p99=f"{ms(p99(one.result))} / {ms(p99(none.result))}",
                ratio=quotient(one.rate, none.rate),
            )
        )
        self.notes.append(
            f"cluster holds with SEATLOCK_HOLD_REPLICAS=1: {one.result.behind} of"
            f" {one.result.ops} answered 503 (WAIT timed out after {REPLICA_TIMEOUT_MS} ms)"
        )

    async def in_turns(self, targets: Sequence[Target]) -> None:
        """Each target for seconds/turns, in rotation, ``turns`` times: a drift of the machine's
        speed moves them alike. Unless paced (measured again), each target's layouts are loaded
        first and a short run warms the generators up, unmeasured."""
        seconds = self.plan.seconds / self.plan.turns
        for target in targets if not targets[0].pace else ():  # and the generators' first run
            await warm(target.url, target.transport)
            await self.turn(target.paced(0.0), min(0.5, seconds / 2))
        per_turn = []
        for _ in range(self.plan.turns):
            rates = [f"{await self.turn(target, seconds):,.0f}" for target in targets]
            per_turn.append(" / ".join(rates))
        names = " / ".join(t.name for t in targets)
        self.notes.append(f"cluster part turn by turn, {names}, holds/s: {'; '.join(per_turn)}")

    async def turn(self, target: Target, seconds: float) -> float:
        """One timed run on ``target``; its holds/s."""
        start_at = time.time() + self.plan.start_s + 0.1 * self.plan.generators
        jobs = [
            Job(
                target.url,
                target.transport,
                target.replicas,
                start_at,
                seconds,
                self.plan.connections,
                1 + g * self.plan.connections,
                target.pace / self.plan.generators,
            )
            for g in range(self.plan.generators)
        ]
        loop = asyncio.get_running_loop()
        runs = [loop.run_in_executor(self.executor, generator_main, job) for job in jobs]
        await asyncio.sleep(max(0.0, start_at - time.time()))
        before = target.cpu_now()
        results = await asyncio.gather(*runs)
        after = target.cpu_now()
        for port, cpu in after.items():
            target.node_cpu_s[port] = target.node_cpu_s.get(port, 0.0) + cpu - before[port]
        turn = Result()
        for result in results:
            turn.merge(result)
        target.result.merge(turn)
        target.seconds += seconds
        return turn.ops / seconds

    def holds_rows(self, targets: Sequence[Target]) -> None:
        base = targets[0].rate
        for target in targets:
            p50 = ms(pct(target.result.latencies_ms, 0.5))
            ratio = "1.00 (baseline)" if target is targets[0] else quotient(target.rate, base)
            value = f"{target.rate:,.0f} holds/s ({target.result.won:,} of"
            value += f" {target.result.ops:,} won)"
            name = f"Cluster part, engine holds over {SCREENINGS} screenings: {target.name}"
            self.rows.append(Row(name, value, p50, ms(p99(target.result)), ratio, ""))

    def cost_rows(self, flat: list[Target], paced: list[Target]) -> None:
        """Redis's CPU per hold in the paced runs (every node as busy), per node; the engine
        process's in the runs flat out (an API host on release day runs hot)."""
        fast, plain, spread = paced
        holds = spread.holds_by_node()
        per_node = [
            f"{per_hold(spread.node_cpu_s[port], holds[port]):.1f} us ({holds[port]:,} holds)"
            for port in spread.nodes
        ]
        at = f"each node at ~{fast.rate:,.0f} holds/s"
        client = " / ".join(f"{t.client_us:.0f}" for t in flat[:2]) + " us; "
        client += " / ".join(f"{t.client_us:.0f}" for t in flat[2:]) + " us"
        self.rows += [
            Row(
                f"Redis CPU per hold, {at}: one Redis (fast / redis-py transport)",
                f"{fast.redis_us:.1f} / {plain.redis_us:.1f} us",
            ),
            Row(f"Redis CPU per hold, {at}: cluster, each primary", " ; ".join(per_node)),
            Row(
                "Cluster cost per hold / single-node cost per hold (Redis CPU)",
                f"{spread.redis_us:.1f} / {fast.redis_us:.1f} us",
                ratio=quotient(spread.redis_us, fast.redis_us),
                target=COST_TARGET,
                met=fast.redis_us > 0 and spread.redis_us <= MAX_COST_RATIO * fast.redis_us,
            ),
            Row(
                "Redis CPU per hold, flat out: one Redis (fast transport) / cluster, all primaries",
                f"{flat[0].redis_us:.1f} us at {flat[0].rate:,.0f} holds/s / {flat[2].redis_us:.1f}"
                f" us at {flat[2].rate / len(flat[2].nodes):,.0f} holds/s a primary",
            ),
            Row(
                "Engine process CPU per hold, flat out: one Redis, fast / redis-py transport;"
                " cluster, fast / redis-py transport",
                client,
                ratio=quotient(flat[2].client_us, flat[0].client_us) + " (cluster / one Redis)",
            ),
        ]


def quotient(part: float, whole: float) -> str:
    return f"{part / whole:.2f}" if whole > 0 else "n/a"


def p99(result: Result) -> float:
    return pct(result.latencies_ms, 0.99)


async def cluster_part(config: Any) -> tuple[list[Row], list[str]]:
    """The cluster part of ``seatlock bench`` for the bench's ``Config``: its rows and notes."""
    return await ClusterBench(Plan.from_bench(config)).run()


async def add_cluster_part(report: Report, config: Any) -> None:
    """``cluster_part``'s rows and notes added to the bench's report."""
    rows, notes = await cluster_part(config)
    report.rows += rows
    report.notes += notes
