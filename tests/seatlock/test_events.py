"""The hub's direct frame path: frames built once per audience and per loop turn, slow sockets
dropped."""

from __future__ import annotations

import asyncio
import time
from typing import Any

import orjson
import pytest
from prometheus_client import REGISTRY
from redis.asyncio import Redis

from seatlock import keys
from seatlock.engine import events, watchers
from seatlock.engine.events import Hub
from seatlock.engine.transport import Transport
from seatlock.engine.watchers import text_frame
from tests.lua.support import wait_until

EVENT = {
    "screening_id": 7,
    "ts": 0,
    "seats": [{"seat_id": 1, "status": "reserved", "user_id": 3, "expires_at": 1000}],
}


def payload(frame: bytes) -> Any:
    """The JSON of one server text frame."""
    assert frame[0] == 0x81
    start = {126: 4, 127: 10}.get(frame[1], 2)
    return orjson.loads(frame[start:])


class FakeSocket:
    """A client's transport as the hub sees it: what is written, and whether it takes more."""

    def __init__(self, frames: list[bytes] | None = None, full: bool = False) -> None:
        self.frames = [] if frames is None else frames  # one entry per write
        self.full = full
        self.closing = False

    def write(self, data: bytes) -> None:
        self.frames.append(data)

    def is_closing(self) -> bool:
        return self.closing

    def get_write_buffer_size(self) -> int:
        return watchers.MAX_BUFFERED + 1 if self.full else 0


def recorder(frames: list[bytes]) -> FakeSocket:
    return FakeSocket(frames)


def messages(data: bytes) -> list[Any]:
    """The JSON of every server text frame in one write."""
    found = []
    while data:
        assert data[0] == 0x81
        size, start = data[1], 2
        if size == 126:
            size, start = int.from_bytes(data[2:4], "big"), 4
        found.append(orjson.loads(data[start : start + size]))
        data = data[start + size :]
    return found


def test_text_frames_use_the_shortest_length_encoding() -> None:
    assert text_frame(b"x" * 125)[:2] == b"\x81\x7d"
    assert text_frame(b"x" * 126)[:4] == b"\x81\x7e\x00\x7e"
    assert text_frame(b"x" * 65536)[:10] == b"\x81\x7f" + (65536).to_bytes(8, "big")
    assert text_frame(b"abc") == b"\x81\x03abc"


async def test_direct_watchers_get_one_shared_frame_per_audience(transport: Transport) -> None:
    hub = Hub(transport)
    got: dict[str, list[bytes]] = {"a": [], "b": [], "owner": []}
    for name, user in (("a", None), ("b", 5), ("owner", 3)):
        hub.join(7, user, recorder(got[name]))
    queued = hub.join(7, None)
    hub.dispatch(orjson.dumps(EVENT))
    assert not got["a"]  # sent at the end of the loop's turn
    await asyncio.sleep(0)
    assert got["a"][0] is got["b"][0]  # encoded once for the public
    public = payload(got["a"][0])
    assert public["reserved_by"] is None
    assert payload(got["owner"][0])["reserved_by"] == 3
    assert orjson.loads(queued.queue.get_nowait()) == public  # the queue path still works


async def test_events_of_one_turn_go_out_in_one_write_per_watcher(transport: Transport) -> None:
    """Three events read together: one write each, in publish order, every version kept; the
    owner's write has its own view of its seat and the public one of the others."""
    hub = Hub(transport)
    public, owner, queued = [], [], hub.join(7, None)
    hub.join(7, None, recorder(public))
    hub.join(7, 3, recorder(owner))
    for version, user in ((4, 3), (5, 8), (6, None)):
        seat = {**EVENT["seats"][0], "seat_id": version, "user_id": user}
        hub.dispatch(orjson.dumps({**EVENT, "version": version, "seats": [seat]}))
    hub.dispatch(orjson.dumps({**EVENT, "screening_id": 9, "version": 1}))  # nobody watches 9
    hub.fan_out()
    assert len(public) == 1 and len(owner) == 1
    seen = [(m["seat_id"], m["version"], m["reserved_by"]) for m in messages(public[0])]
    assert seen == [(4, 4, None), (5, 5, None), (6, 6, None)]
    mine = [(m["seat_id"], m["version"], m["reserved_by"]) for m in messages(owner[0])]
    assert mine == [(4, 4, 3), (5, 5, None), (6, 6, None)]
    texts = [orjson.loads(queued.queue.get_nowait()) for _ in range(3)]
    assert texts == messages(public[0])  # the same messages, one at a time
    hub.fan_out()  # nothing left
    assert len(public) == 1


def delays() -> tuple[float, float, float]:
    """The event-delay histogram so far: (count, sum in s, count within 50 ms)."""
    name = "seatlock_ws_event_delay_seconds"
    return (
        REGISTRY.get_sample_value(f"{name}_count") or 0.0,
        REGISTRY.get_sample_value(f"{name}_sum") or 0.0,
        REGISTRY.get_sample_value(f"{name}_bucket", {"le": "0.05"}) or 0.0,
    )


async def test_each_event_sent_records_how_long_after_its_change_it_went_out(
    transport: Transport,
) -> None:
    """Once per event and process (not per watcher), from the event's ts on the hub's clock
    (Redis's) to its write: the server's share of a watcher's lag. Events nobody here
    watches are not counted."""
    clock = [10_000]
    hub = Hub(transport, now_ms=lambda: clock[0])
    hub.join(7, None, FakeSocket())
    hub.join(7, 3, FakeSocket())
    count, total, quick = delays()
    hub.dispatch(orjson.dumps({**EVENT, "ts": 9_700, "version": 1}))  # 300 ms old when sent
    hub.dispatch(orjson.dumps({**EVENT, "ts": 9_990, "version": 2}))  # 10 ms
    hub.dispatch(orjson.dumps({**EVENT, "screening_id": 9, "ts": 0, "version": 1}))  # unwatched
    hub.fan_out()
    after = delays()
    assert after[0] - count == 2
    assert after[1] - total == pytest.approx(0.31, abs=1e-3)  # the sum is of other tests too
    assert after[2] - quick == 1  # the 10 ms one


def busy(seconds: float) -> None:
    """Use this thread's CPU for ``seconds``."""
    until = time.thread_time() + seconds
    while time.thread_time() < until:
        pass


class SlowSocket(FakeSocket):
    def write(self, data: bytes) -> None:
        busy(0.02)  # the CPU thousands of watchers' writes take together
        super().write(data)


class PausedSocket(FakeSocket):
    def write(self, data: bytes) -> None:
        time.sleep(0.05)  # the process paused mid-fan-out (a busy machine): no CPU used
        super().write(data)


async def test_a_fan_out_paused_without_using_the_cpu_does_not_rest(transport: Transport) -> None:
    """The rest is measured in the CPU a fan-out took, not in the time it spanned."""
    hub = Hub(transport)
    frames: list[bytes] = []
    hub.join(7, None, PausedSocket(frames))
    hub.dispatch(orjson.dumps({**EVENT, "version": 1}))
    await asyncio.sleep(0)
    assert len(frames) == 1
    sent = time.monotonic()
    hub.dispatch(orjson.dumps({**EVENT, "version": 2}))
    await wait_until(lambda: len(frames) == 2)
    # At once, or after a rest of four times the few µs of CPU the first took (on a loaded
    # machine: a millisecond or so); a wall-clock rest would have waited 4 x 50 ms.
    assert time.monotonic() - sent < 0.1


async def test_a_costly_fan_out_rests_and_the_events_meanwhile_go_out_together(
    transport: Transport,
) -> None:
    hub = Hub(transport)
    frames: list[bytes] = []
    hub.join(7, None, SlowSocket(frames))

    def change(version: int) -> None:
        hub.dispatch(orjson.dumps({**EVENT, "version": version}))

    change(1)
    await asyncio.sleep(0)
    assert [m["version"] for m in messages(frames[0])] == [1]  # nothing before it: at once
    sent = time.monotonic()
    change(2)
    change(3)
    await wait_until(lambda: len(frames) == 2)
    # It rested four times the 20 ms of CPU the last one took (a stall only makes it later).
    assert time.monotonic() - sent >= events.FAN_OUT_REST * 0.02
    assert [m["version"] for m in messages(frames[1])] == [2, 3]  # one write, in order
    await asyncio.sleep(events.FAN_OUT_MAX_REST_S)  # rested long enough: the next goes at once
    change(4)
    await asyncio.sleep(0)
    assert len(frames) == 3


async def test_a_socket_closing_or_too_full_drops_only_that_client(transport: Transport) -> None:
    hub = Hub(transport)
    fast_frames: list[bytes] = []
    told: list[str] = []
    full, closing = FakeSocket(full=True), FakeSocket()
    slow = hub.join(7, None, full)
    slow.on_drop = lambda: told.append("full")  # api/websockets.py closes the socket then
    gone = hub.join(7, 3, closing)
    gone.on_drop = lambda: told.append("closing")
    closing.closing = True
    fast = hub.join(7, None, recorder(fast_frames))
    hub.dispatch(orjson.dumps(EVENT))
    hub.fan_out()
    hub.dispatch(orjson.dumps(EVENT))
    hub.fan_out()
    assert slow.dropped and gone.dropped and sorted(told) == ["closing", "full"]  # told once
    assert slow.queue is None and not full.frames and not closing.frames
    assert not fast.dropped and len(fast_frames) == 2
    assert fast.idle_since() > 0
    assert len(hub._rooms[7]) == 3 and hub.stats()["total_connections"] == 3  # until they leave
    for watcher in (slow, gone, fast):
        hub.leave(watcher)
    assert 7 not in hub._rooms


async def test_events_reach_change_listeners_and_live_follows_the_subscription(
    redis: Redis, transport: Transport
) -> None:
    hub = Hub(transport)
    changed: list[int] = []
    hub.change_listeners.append(changed.append)
    hub.dispatch(orjson.dumps({**EVENT, "screening_id": 9}))  # no watchers: still told
    assert changed == [9]
    stop = asyncio.Event()
    task = asyncio.create_task(hub.run(stop))
    for _ in range(100):
        if hub.live:
            break
        await asyncio.sleep(0.02)
    assert hub.live
    epoch = hub.epoch
    await redis.publish(keys.screening_events(11), orjson.dumps({**EVENT, "screening_id": 11}))
    for _ in range(100):
        if 11 in changed:
            break
        await asyncio.sleep(0.02)
    assert changed == [9, 11]
    stop.set()
    await asyncio.wait_for(task, 5)
    assert not hub.live and hub.epoch == epoch + 1


async def test_a_subscription_that_stops_answering_is_dropped_and_renewed(
    redis: Redis, transport: Transport, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(events, "HEALTH_S", 0.1)
    hub = Hub(transport)
    stop = asyncio.Event()
    task = asyncio.create_task(hub.run(stop))
    try:
        await wait_until(lambda: hub.live)
        epoch = hub.epoch
        await redis.execute_command("CLIENT", "PAUSE", 1500, "ALL")  # silent, but connected
        await wait_until(lambda: not hub.live)  # pinged, no answer: dropped
        await wait_until(lambda: hub.live, seconds=5)  # back once Redis answers again
        assert hub.epoch >= epoch + 2
    finally:
        stop.set()
        await asyncio.wait_for(task, 5)


def versioned(version: int | None, seat: int = 1) -> bytes:
    event: dict[str, Any] = {**EVENT, "seats": [{**EVENT["seats"][0], "seat_id": seat}]}
    if version is not None:
        event["version"] = version
    return orjson.dumps(event)


async def test_a_replaying_watcher_gets_only_the_live_events_its_catch_up_did_not_cover(
    transport: Transport,
) -> None:
    """Events dispatched while a catch-up is read and sent wait; those at or below the version
    it brought the client to are dropped (they were in it), the others follow it, in order."""
    hub = Hub(transport)
    frames: list[bytes] = []
    watcher = hub.join(7, None, recorder(frames))  # joins with its writer, and no queue
    watcher.replaying()
    for version, seat in ((5, 1), (6, 2), (7, 3), (None, 4), (8, 5)):
        hub.dispatch(versioned(version, seat))
    hub.fan_out()
    assert watcher.queue is None and not frames  # held back, not written
    watcher.go_live(6)
    assert [(payload(f)["seat_id"], payload(f)["version"]) for f in frames] == [
        (3, 7),
        (4, None),  # a resync's map: no version, never dropped
        (5, 8),
    ]
    hub.dispatch(versioned(9))
    hub.fan_out()
    assert payload(frames[-1])["version"] == 9 and len(frames) == 4


async def test_events_waiting_for_the_turns_end_are_held_before_going_live(
    transport: Transport,
) -> None:
    """api/websockets.py fans out what waits before go_live: an event the catch-up covered
    (read from Redis in the same turn) is not sent after it again."""
    hub = Hub(transport)
    frames: list[bytes] = []
    watcher = hub.join(7, None, recorder(frames))
    watcher.replaying()
    hub.dispatch(versioned(5, 1))
    hub.dispatch(versioned(7, 2))  # both still waiting for the end of the turn
    hub.fan_out()
    watcher.go_live(6)
    await asyncio.sleep(0)  # the turn's end: nothing left to send
    assert [payload(f)["version"] for f in frames] == [7]


async def test_a_watcher_too_slow_to_catch_up_is_dropped(transport: Transport) -> None:
    hub = Hub(transport)
    frames: list[bytes] = []
    told: list[bool] = []
    watcher = hub.join(7, None, recorder(frames))
    watcher.on_drop = lambda: told.append(True)
    watcher.replaying()
    for version in range(events.QUEUE_SIZE + 1):
        hub.dispatch(versioned(version))
        hub.fan_out()
    assert watcher.dropped and told == [True] and not frames
    watcher.go_live(0)
    hub.dispatch(versioned(10_000))
    hub.fan_out()
    assert not frames and told == [True]


async def test_a_queued_watcher_replays_through_its_queue(transport: Transport) -> None:
    """A client the server cannot write to directly (a middleware wraps its ``send``) holds
    back its live events the same way, then gets them through its queue."""
    hub = Hub(transport)
    watcher = hub.join(7, None)
    watcher.replaying()
    hub.dispatch(versioned(5))
    hub.dispatch(versioned(6))
    hub.fan_out()
    assert watcher.queue.empty()
    watcher.go_live(5)
    assert orjson.loads(watcher.queue.get_nowait())["version"] == 6 and watcher.queue.empty()


def test_the_screening_id_is_read_from_the_head_of_an_event_alone() -> None:
    assert events.screening_of(b'{"screening_id":123,"version":4,"seats":[]}') == 123
    assert events.screening_of('{"screening_id":5,"version":1}') == 5  # a transport giving str
    assert events.screening_of(b'{"version":4,"screening_id":123}') is None  # not publish()'s
    assert events.screening_of(b'{"screening_id":"x","version":4}') is None
    assert events.screening_of(b'{"screening_id":-1,"seats":[]}') is None


async def test_events_nobody_here_needs_are_not_parsed_but_still_invalidate(
    transport: Transport, monkeypatch: pytest.MonkeyPatch
) -> None:
    hub = Hub(transport)
    changed: list[int] = []
    hub.change_listeners.append(changed.append)
    wanted: set[int] = {8}
    given: list[tuple[int, Any]] = []
    hub.screening_listeners.append((wanted.__contains__, lambda sid, e: given.append((sid, e))))
    parsed: list[Any] = []
    parse = orjson.loads

    def loads(data: Any) -> Any:
        parsed.append(data)
        return parse(data)

    monkeypatch.setattr(events.orjson, "loads", loads)
    hub.dispatch(orjson.dumps({**EVENT, "screening_id": 9}))  # no watcher, not wanted
    assert changed == [9] and parsed == [] and given == []
    hub.dispatch(orjson.dumps({**EVENT, "screening_id": 8}))  # wanted by the listener
    assert changed == [9, 8] and len(parsed) == 1 and given == [(8, {**EVENT, "screening_id": 8})]
    frames: list[bytes] = []
    hub.join(7, None, recorder(frames))
    hub.dispatch(orjson.dumps(EVENT))  # watched: parsed, delivered, not given to the listener
    hub.fan_out()
    assert changed == [9, 8, 7] and len(parsed) == 2 and len(frames) == 1 and len(given) == 1
    every: list[int] = []
    hub.event_listeners.append(lambda sid, e: every.append(sid))
    hub.dispatch(orjson.dumps({**EVENT, "screening_id": 9}))  # a listener of every event
    assert every == [9] and len(parsed) == 3


async def test_a_malformed_event_of_a_watched_screening_is_still_refused(
    transport: Transport, caplog: pytest.LogCaptureFixture
) -> None:
    hub = Hub(transport)
    frames: list[bytes] = []
    hub.join(7, None, recorder(frames))
    hub.dispatch(b'{"screening_id":7,"seats":[')
    hub.fan_out()
    assert frames == [] and "malformed seat event" in caplog.text
