"""A throw-away Redis Cluster on loopback: 3 primaries and 3 replicas from the project's
redis-server, for the cluster tests and the cluster part of ``seatlock bench``.

Slots are assigned and nodes introduced by hand (CLUSTER ADDSLOTS, MEET, REPLICATE) rather than
with ``redis-cli --cluster create``, which sleeps a second per step: the cluster is ready in
about a second. Redis 6.2 has no ``--cluster-port``: the bus listens on port + 10000, so ports
are picked with both free (``free_port``: below the kernel's ephemeral range when there is room).
"""

from __future__ import annotations

import signal
import subprocess
from dataclasses import dataclass, field
from functools import partial
from typing import ClassVar, Self

from redis import Redis

from seatlock.server.embedded import free_port
from seatlock.server.redisnodes import RedisNodes

SLOTS = 16384
BUS_OFFSET = 10_000
FLUSH_WAIT_MS = 5000  # flush(): how long replicas may take to have it


def free_pair() -> int:
    """A port free on loopback whose cluster bus port (port + 10000) is free too, both below the
    ephemeral range when there is room (``free_port``)."""
    return free_port(span=BUS_OFFSET)


@dataclass
class LocalCluster(RedisNodes):
    """``primaries`` primaries, each with ``replicas_each`` replicas, in ``root``."""

    what: ClassVar[str] = "local cluster"

    primaries: int = 3
    replicas_each: int = 1
    options: list[str] = field(default_factory=list)  # more redis-server options, for every node
    node_timeout_ms: int = 2000  # how long a node may be unreachable before it counts as failed

    @property
    def primary_ports(self) -> list[int]:
        return self.ports[: self.primaries]

    @property
    def url(self) -> str:
        """The seatlock URL of the cluster (every primary as a seed)."""
        return "redis+cluster://" + ",".join(f"127.0.0.1:{p}" for p in self.primary_ports)

    def client(self, port: int) -> Redis:
        """A plain client of one node, replies unparsed (CLUSTER NODES as text)."""
        node = Redis(host="127.0.0.1", port=port, socket_timeout=5)
        node.response_callbacks.clear()
        return node

    def start(self) -> Self:
        count = self.primaries * (1 + self.replicas_each)
        self.ports = [free_pair() for _ in range(count)]
        for port in self.ports:
            self.procs.append(self._spawn(port))
        for port in self.ports:
            self._wait(partial(self._pings, port), f"node {port}")
        self._assign_slots()
        self._meet()
        self._wait(self._all_known, "nodes to meet")
        self._replicate()
        self._wait(self._state_ok, "cluster_state:ok")
        self._wait(self._replicas_synced, "replicas to sync")
        return self

    def _spawn(self, port: int, *options: str) -> subprocess.Popen[bytes]:
        cluster = [
            "--cluster-enabled", "yes",
            "--cluster-config-file", "nodes.conf",
            "--cluster-node-timeout", str(self.node_timeout_ms),
            "--notify-keyspace-events", "Ex",
            "--hz", "100",
            # A replica may take over however long it was cut off (the tests kill right after
            # a sync; RedisNodes already starts every node with no diskless-sync delay).
            "--cluster-replica-validity-factor", "0",
        ]  # fmt: skip
        return super()._spawn(port, *cluster, *self.options, *options)

    def _assign_slots(self) -> None:
        share = SLOTS // self.primaries
        for i, port in enumerate(self.primary_ports):
            last = SLOTS - 1 if i == self.primaries - 1 else (i + 1) * share - 1
            with self.client(port) as node:
                node.execute_command("CLUSTER ADDSLOTS", *range(i * share, last + 1))

    def _meet(self) -> None:
        with self.client(self.ports[0]) as first:
            for port in self.ports[1:]:
                first.execute_command("CLUSTER MEET", "127.0.0.1", port)

    def _all_known(self) -> bool:
        for port in self.ports:
            with self.client(port) as node:
                lines = _text(node.execute_command("CLUSTER NODES")).splitlines()
            if len(lines) < len(self.ports) or any("handshake" in line for line in lines):
                return False
        return True

    def _replicate(self) -> None:
        ids = [self.node_id(port) for port in self.primary_ports]
        replicas = self.ports[self.primaries :]
        for j, port in enumerate(replicas):
            with self.client(port) as node:
                node.execute_command("CLUSTER REPLICATE", ids[j % self.primaries])

    def _replicas_synced(self) -> bool:
        """Every replica has its primary's data: only then can it take over from it."""
        for port in self.ports[self.primaries :]:
            with self.client(port) as node:
                if "master_link_status:up" not in _text(node.execute_command("INFO replication")):
                    return False
        return True

    def node_id(self, port: int) -> str:
        with self.client(port) as node:
            return _text(node.execute_command("CLUSTER MYID"))

    def _state_ok(self) -> bool:
        for port in self.ports:
            with self.client(port) as node:
                info = _text(node.execute_command("CLUSTER INFO"))
            if "cluster_state:ok" not in info:
                return False
        return True

    def port_of_slot(self, slot: int) -> int:
        """The port of the primary serving ``slot``."""
        with self.client(self.live_ports()[0]) as node:  # ports[0] may be killed
            for start, end, primary, *_ in node.execute_command("CLUSTER SLOTS"):
                if start <= slot <= end:
                    return int(primary[1])
        raise LookupError(slot)

    def primary_of_slot(self, slot: int) -> int | None:
        """The port of the primary serving ``slot`` as every live node sees it; None while they
        disagree or a failed primary still has it."""
        seen = set()
        for port in self.live_ports():
            with self.client(port) as node:
                for start, end, primary, *_ in node.execute_command("CLUSTER SLOTS"):
                    if start <= slot <= end:
                        seen.add(int(primary[1]))
        found = seen.pop() if len(seen) == 1 else None
        return found if found in self.live_ports() else None

    def live_ports(self) -> list[int]:
        """The ports of the nodes not killed."""
        return [
            port for port, proc in zip(self.ports, self.procs, strict=True) if proc.poll() is None
        ]

    def current_primaries(self) -> list[int]:
        """The ports of the live nodes that serve slots now (after failovers), in port order."""
        found = set()
        with self.client(self.live_ports()[0]) as node:
            for _, _, primary, *_ in node.execute_command("CLUSTER SLOTS"):
                found.add(int(primary[1]))
        return sorted(found & set(self.live_ports()))

    def replica_of(self, primary: int) -> int:
        """The port of a live replica of the primary on port ``primary``, as the replica itself
        says (the primary hears of its replicas by gossip: just after start, not yet)."""
        wanted = self.node_id(primary)
        for port in self.live_ports():
            with self.client(port) as node:
                lines = _text(node.execute_command("CLUSTER NODES")).splitlines()
            for fields in (line.split() for line in lines):
                if "myself" in fields[2] and "slave" in fields[2] and fields[3] == wanted:
                    return port
        raise LookupError(f"no replica of {primary}")

    def wait_for_new_primary(self, slot: int, lost: int, seconds: float = 20.0) -> int:
        """Wait until a node other than ``lost`` serves ``slot`` for every live node; its port."""
        self._wait(lambda: self.primary_of_slot(slot) not in (None, lost), "a failover", seconds)
        port = self.primary_of_slot(slot)
        assert port is not None
        return port

    def keyslot(self, key: str) -> int:
        with self.client(self.live_ports()[0]) as node:  # ports[0] may be killed
            return int(node.execute_command("CLUSTER KEYSLOT", key))

    def flush(self) -> None:
        """Empty every primary, and wait (up to FLUSH_WAIT_MS) until its connected replicas
        have the flush too: a replica still resyncing after an earlier kill or failover would
        otherwise leave the next WAIT unanswered."""
        for port in self.current_primaries():
            with self.client(port) as node:
                node.flushall()
                info = _text(node.execute_command("INFO replication"))
                replicas = int(info.split("connected_slaves:", 1)[1].split()[0])
                if replicas:
                    node.execute_command("WAIT", replicas, FLUSH_WAIT_MS)

    def kill(self, port: int) -> None:
        """kill -9 one node."""
        self.procs[self.ports.index(port)].send_signal(signal.SIGKILL)

    def pause(self, port: int) -> None:
        """Stop one node (SIGSTOP): it keeps its connections and answers nothing, as a hung
        server or one cut off without a reset does, until ``resume``."""
        self.procs[self.ports.index(port)].send_signal(signal.SIGSTOP)

    def resume(self, port: int) -> None:
        self.procs[self.ports.index(port)].send_signal(signal.SIGCONT)


def _text(value: bytes | str) -> str:
    return value.decode() if isinstance(value, bytes) else value
