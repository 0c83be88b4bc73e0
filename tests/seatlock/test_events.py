"""The hub's direct frame path: frames built once per audience, slow sockets dropped."""

from __future__ import annotations

import asyncio
from typing import Any

import orjson
import pytest
from redis.asyncio import Redis

from seatlock import keys
from seatlock.engine import events
from seatlock.engine.events import FrameWriter, Hub, text_frame
from seatlock.engine.transport import Transport
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


def recorder(frames: list[bytes]) -> FrameWriter:
    def write(frame: bytes) -> bool:
        frames.append(frame)
        return True

    return write


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
    assert got["a"][0] is got["b"][0]  # encoded once for the public
    public = payload(got["a"][0])
    assert public["reserved_by"] is None
    assert payload(got["owner"][0])["reserved_by"] == 3
    assert orjson.loads(queued.queue.get_nowait()) == public  # the queue path still works


async def test_a_refused_write_drops_only_that_client(transport: Transport) -> None:
    hub = Hub(transport)
    fast_frames: list[bytes] = []
    told: list[bool] = []
    slow = hub.join(7, None, lambda frame: False)
    slow.on_drop = lambda: told.append(True)  # api/websockets.py closes the socket then
    fast = hub.join(7, None, recorder(fast_frames))
    hub.dispatch(orjson.dumps(EVENT))
    hub.dispatch(orjson.dumps(EVENT))
    assert slow.dropped and told == [True] and slow.queue is None  # told once; no queue
    assert not fast.dropped and len(fast_frames) == 2
    assert fast.last_sent > 0


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
    assert watcher.queue is None and not frames  # held back, not written
    watcher.go_live(6)
    assert [(payload(f)["seat_id"], payload(f)["version"]) for f in frames] == [
        (3, 7),
        (4, None),  # a resync's map: no version, never dropped
        (5, 8),
    ]
    hub.dispatch(versioned(9))
    assert payload(frames[-1])["version"] == 9 and len(frames) == 4


async def test_a_watcher_too_slow_to_catch_up_is_dropped(transport: Transport) -> None:
    hub = Hub(transport)
    frames: list[bytes] = []
    told: list[bool] = []
    watcher = hub.join(7, None, recorder(frames))
    watcher.on_drop = lambda: told.append(True)
    watcher.replaying()
    for version in range(events.QUEUE_SIZE + 1):
        hub.dispatch(versioned(version))
    assert watcher.dropped and told == [True] and not frames
    watcher.go_live(0)
    hub.dispatch(versioned(10_000))
    assert not frames and told == [True]


async def test_a_queued_watcher_replays_through_its_queue(transport: Transport) -> None:
    """A client the server cannot write to directly (a middleware wraps its ``send``) holds
    back its live events the same way, then gets them through its queue."""
    hub = Hub(transport)
    watcher = hub.join(7, None)
    watcher.replaying()
    hub.dispatch(versioned(5))
    hub.dispatch(versioned(6))
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
    assert frames == [] and "malformed seat event" in caplog.text
