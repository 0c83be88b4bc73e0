"""What the WebSocket fan-out costs per frame per watcher, on real sockets.

    .venv/bin/python -m loadtests.fanoutcost [--watchers 2000] [--rounds 40]

Serves nothing and needs no Redis: it opens ``--watchers`` loopback TCP connections to a uvloop
server in this process, joins each server-side transport to a ``Hub`` as a directly written
watcher (as api/websockets.py does), and dispatches seat events as the subscription would, 1
and then 5 of them per loop turn (several events read from Redis at once). Prints the median
of this process's CPU per frame per watcher, the sockets' writes (the kernel's TCP work
included) and the hub's Python together; the peers drain their sockets between rounds, outside
the measured time.
"""

from __future__ import annotations

import argparse
import asyncio
import gc
import socket
import statistics
import time
from typing import Any

import orjson
import uvloop

from seatlock.engine.events import Hub


class Accepted(asyncio.Protocol):
    def __init__(self, transports: list[asyncio.Transport], count: int, all_in: asyncio.Event):
        self.transports, self.count, self.all_in = transports, count, all_in

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self.transports.append(transport)  # type: ignore[arg-type]
        if len(self.transports) >= self.count:
            self.all_in.set()


def event(version: int) -> bytes:
    """A seat event as lua/lib.lua publish() writes it (another user's hold)."""
    seat = {"seat_id": 100 + version % 50, "status": "reserved", "user_id": 10**6 + version}
    seat["expires_at"] = 1_700_000_600_000
    return orjson.dumps(
        {"screening_id": 7, "ts": 1_700_000_000_000, "version": version, "seats": [seat]}
    )


def drain(peers: list[socket.socket]) -> None:
    for peer in peers:
        try:
            while peer.recv(1 << 16):
                pass
        except BlockingIOError:
            pass


async def connect(count: int) -> tuple[Any, list[asyncio.Transport], list[socket.socket]]:
    loop = asyncio.get_running_loop()
    transports: list[asyncio.Transport] = []
    all_in = asyncio.Event()
    server = await loop.create_server(
        lambda: Accepted(transports, count, all_in), "127.0.0.1", 0, backlog=count + 64
    )
    port = server.sockets[0].getsockname()[1]
    peers = []
    for n in range(count):
        if n % 50 == 0:
            await asyncio.sleep(0.001)  # let the server accept
        peer = socket.create_connection(("127.0.0.1", port))
        peer.setblocking(False)
        peers.append(peer)
    await asyncio.wait_for(all_in.wait(), 60)
    return server, transports, peers


async def per_frame_us(hub: Hub, peers: list[socket.socket], rounds: int, per_turn: int) -> float:
    """Median CPU microseconds per frame per watcher over ``rounds`` loop turns."""
    watchers, version, samples = len(peers), 0, []
    for _ in range(rounds):
        drain(peers)
        gc.collect()
        started = time.process_time()
        for _ in range(per_turn):
            version += 1
            hub.dispatch(event(version))
        await asyncio.sleep(0)  # the end of the turn: the hub fans out
        samples.append((time.process_time() - started) * 1e6 / (per_turn * watchers))
    return statistics.median(samples)


async def measure(watchers: int, rounds: int) -> dict[int, float]:
    server, transports, peers = await connect(watchers)
    hub = Hub(None)  # type: ignore[arg-type]  # never subscribes: events are dispatched here
    for transport in transports:
        hub.join(7, None, transport)
    try:
        return {n: await per_frame_us(hub, peers, rounds, n) for n in (1, 5)}
    finally:
        for peer in peers:
            peer.close()
        server.close()


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--watchers", type=int, default=2000)
    parser.add_argument("--rounds", type=int, default=40)
    args = parser.parse_args()
    for per_turn, us in uvloop.run(measure(args.watchers, args.rounds)).items():
        print(f"{args.watchers} watchers, {per_turn} event(s) per turn: {us:.2f} us CPU per frame")


if __name__ == "__main__":
    main()
