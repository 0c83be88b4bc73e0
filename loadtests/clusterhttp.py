"""The bench's part "cluster-http": won holds through HTTP on one Redis and on a Redis Cluster.

The "cluster" part (loadtests/clusterbench.py) measures the engine alone, with no HTTP. This part
serves the "http" part's won-hold workload (2 seats of the connection's own, then the guide's
DELETE cancel: every attempt wins, so every request reaches Redis) through three seatlock servers
with the same workers and the bench's PostgreSQL: the bench's main server, on one Redis and the
fast transport, and two on a 3-primary Redis Cluster of this part's own (no replicas), one per
``SEATLOCK_REDIS_TRANSPORT`` (``fast``: a connection of ours to each primary; ``redis-py``: its
cluster pipelines). Each holds in screenings of its own, in a room seeded for this part, so none
touches another's seats, events or history rows. They take turns (``turns`` times, half the
bench's duration in all per server) and all run throughout.

Rows: each server's won holds/s with p50/p99 (one Redis is the ratio's base), and the CPU per won
hold and its cancel of each: the serving process tree (/proc), its Redis (the main Redis, or every
primary, from INFO CPU) and PostgreSQL (/proc). No target: the figures say what HTTP on a cluster
costs against one Redis, where the "cluster" part's rows say it for the engine.
"""

from __future__ import annotations

import contextlib
import dataclasses
import functools
import os
from collections.abc import Callable
from dataclasses import dataclass, field
from math import nan
from typing import TYPE_CHECKING

from loadtests.benchreport import Row, quantiles, rate
from loadtests.benchseed import seed_room_of_a_part
from loadtests.clusterbench import cpu_seconds
from loadtests.loadgen import Sample, redis_address
from loadtests.procmem import Children, children_named, children_of, tree_cpu_s
from seatlock.server.localcluster import LocalCluster
from seatlock.server.redisnodes import scratch_root

if TYPE_CHECKING:
    from loadtests.bench import Bench
    from loadtests.benchseed import Seeded

ROWS, PER_ROW = 12, 25  # the part's room: 300 seats, 150 pairs per screening
SCREENINGS = 12  # per server: 1,800 pairs for the bench's 128 connections
SINGLE = "one Redis"
# The cluster's servers: a name each, and its SEATLOCK_REDIS_TRANSPORT.
CLUSTER = (("a 3-primary cluster, fast transport", "fast"),
           ("a 3-primary cluster, redis-py transport", "redis-py"))  # fmt: skip
WHO = ("seatlock", "Redis", "PostgreSQL")


@dataclass
class Side:
    """One server under test: where it listens, how to read its CPU, and what it measured."""

    name: str
    port: int
    work: list[tuple[int, list[int]]]  # (screening, two seats) per connection
    cpu: Callable[[], dict[str, float]]  # CPU seconds so far, by WHO
    sample: Sample = field(default_factory=Sample)


async def cluster_http_part(bench: Bench, s: Seeded) -> None:
    screenings, seats = await seed_room_of_a_part(
        bench.database_url,
        "Cluster",
        "Across the Shards",
        ROWS,
        PER_ROW,
        SCREENINGS * (1 + len(CLUSTER)),
    )
    shares = [screenings[i : i + SCREENINGS] for i in range(0, len(screenings), SCREENINGS)]
    work = [
        bench.won_hold_work(dataclasses.replace(s, spread_screenings=share, spread_seats=seats))
        for share in shares
    ]
    sides = [Side(SINGLE, bench.port, work[0], functools.partial(single_cpu, bench))]
    async with contextlib.AsyncExitStack() as servers:
        cluster = servers.enter_context(
            LocalCluster(scratch_root("seatlock-bench-cluster-http-"), replicas_each=0)
        )
        for i, (name, transport) in enumerate(CLUSTER, start=1):
            env = {"SEATLOCK_REDIS_URL": cluster.url, "SEATLOCK_REDIS_TRANSPORT": transport}
            workers = bench.config.server_workers
            server = bench.another_server(f"cluster-http-{transport}", workers, env)
            port, proc = await servers.enter_async_context(server)
            sides.append(
                Side(name, port, work[i], functools.partial(cluster_cpu, proc.pid, cluster))
            )
        for side, share in zip(sides, shares, strict=True):
            await bench.warm_screenings([(sid, seats[-1]) for sid in share], side.port)
        await in_turns(bench, sides)
    bench.report.rows += rows(sides, bench.config.duration / 2)


def single_cpu(bench: Bench) -> dict[str, float]:
    """The main server's tree, the bench's Redis (INFO CPU, as the primaries': the cluster's
    nodes are the bench's children too, so /proc's redis-server children would count them) and
    PostgreSQL, in CPU seconds so far."""
    children = children_of()
    return {
        "seatlock": tree_cpu_s(bench.server_procs[0].pid, children),
        "Redis": cpu_seconds(redis_address(bench.redis_url)[1]),
        "PostgreSQL": postgres_cpu(children),
    }


def cluster_cpu(pid: int, cluster: LocalCluster) -> dict[str, float]:
    """The cluster server's tree, the primaries (INFO CPU) and PostgreSQL, as ``single_cpu``."""
    children = children_of()
    return {
        "seatlock": tree_cpu_s(pid, children),
        "Redis": sum(cpu_seconds(port) for port in cluster.primary_ports),
        "PostgreSQL": postgres_cpu(children),
    }


def postgres_cpu(children: Children) -> float:
    return sum(tree_cpu_s(p, children) for p in children_named(os.getpid(), "postgres", children))


async def in_turns(bench: Bench, sides: list[Side]) -> None:
    """Each side's won holds for seconds/turns, in rotation, ``turns`` times (half the bench's
    duration in all per side), after an unmeasured warm-up of each; each sample is the sum of
    its turns, with the CPU each side's processes used during its own turns."""
    turns = bench.config.turns
    seconds = bench.config.duration / 2 / turns
    warm_up = min(bench.config.warm_up_s, seconds / 2)
    for side in sides:
        if warm_up > 0:
            await bench.http_workload("won-hold", warm_up, port=side.port, work=side.work)
    per_turn = []
    for _ in range(turns):
        rates = []
        for side in sides:
            before = side.cpu()
            sample = await bench.http_workload("won-hold", seconds, port=side.port, work=side.work)
            after = side.cpu()
            sample.cpu_s.update({who: after[who] - before[who] for who in WHO})
            side.sample.merge(sample)
            rates.append(f"{sample.ops / seconds:,.0f}")
        per_turn.append(" / ".join(rates))
    names = " / ".join(side.name for side in sides)
    bench.report.notes.append(
        f"cluster-http: turn by turn, won holds via HTTP on {names} per second:"
        f" {'; '.join(per_turn)}"
    )


def rows(sides: list[Side], seconds: float) -> list[Row]:
    """Each side's won holds (one Redis, the first: the ratio's base) and their CPU per won
    hold and its cancel, with each cluster side's over one Redis's in all as the ratio."""
    base = rate(sides[0].sample, seconds)
    out = []
    for side in sides:
        sample = side.sample
        per_s = rate(sample, seconds)
        out.append(
            Row(
                f"Won holds via HTTP on {side.name}: hold 2 seats + cancel",
                f"{per_s:,.0f} holds/s ({sample.won:,} of {sample.ops:,} won)",
                *quantiles(sample),
                "1.00 (base)" if side is sides[0] else shown(per_s, base),
            )
        )
    costs = [per_cycle(side.sample) for side in sides]
    parts = [f"{who} " + " / ".join(f"{cost[who]:,.0f}" for cost in costs) for who in WHO]
    totals = [sum(cost.values()) for cost in costs]
    parts.append("in all " + " / ".join(f"{total:,.0f}" for total in totals))
    names = " / ".join(side.name.removeprefix("a 3-primary ") for side in sides)
    name = f"Server CPU per won hold and its cancel via HTTP (us), {names}"
    ratios = " / ".join(shown(total, totals[0]) for total in totals[1:])
    out.append(Row(name, "; ".join(parts), ratio=ratios))
    return out


def per_cycle(sample: Sample) -> dict[str, float]:
    """Microseconds of each of WHO's CPU per won hold and its cancel (NaN: none measured)."""
    return {
        who: sample.cpu_s.get(who, 0.0) * 1e6 / sample.ops if sample.ops else nan for who in WHO
    }


def shown(part: float, whole: float) -> str:
    return f"{part / whole:.2f}" if whole > 0 else "n/a"
