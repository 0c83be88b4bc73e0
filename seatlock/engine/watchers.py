"""The watchers of a screening in one process, and how a batch of seat events reaches them.

A directly written watcher has a ``Socket`` (the client's asyncio transport: the server writes
WebSocket frames to it, see api/websockets.py); the others (a server we cannot write to, or a
client being replayed what it missed) get one ``Message`` at a time through ``Watcher.deliver``.

``Room.fan_out`` is the hot path: the events of one screening that arrived together are framed
once per audience (the public, and each watching owner: invariant 9) and concatenated, and the
same bytes object goes to every live socket in one ``write``, with two C calls of flow control
before it and no Python object made per watcher. A socket that is closing or holds more than
MAX_BUFFERED bytes unsent is dropped after the loop, as a full queue drops a queued client.
"""

from __future__ import annotations

import asyncio
import contextlib
import socket as sockets
import struct
from collections.abc import Callable, Iterator
from typing import Any, Protocol

from seatlock.errors import SeatLockError
from seatlock.metrics import WS_CLIENTS_DROPPED, WS_EVENTS_DROPPED

QUEUE_SIZE = 256
MAX_BUFFERED = 1 << 20  # bytes unsent to a directly written client before it is dropped
CLOSE = ""  # queued to tell the sender its client was dropped


class Socket(Protocol):
    """What the fan-out uses of a client's transport (an ``asyncio.WriteTransport``)."""

    def write(self, data: bytes) -> None: ...

    def is_closing(self) -> bool: ...

    def get_write_buffer_size(self) -> int: ...


def reset(transport: Any) -> None:
    """Close a client's connection at once, dropping what it did not read: ``close`` waits
    until the client read the transport's buffer, and the kernel goes on sending its socket's
    queue (megabytes) to a client that reads none of it. SO_LINGER 0 makes the close a reset.
    Nothing happens to a connection already closed."""
    sock = transport.get_extra_info("socket")
    if sock is not None:
        with contextlib.suppress(OSError, ValueError, TypeError):
            sock.setsockopt(sockets.SOL_SOCKET, sockets.SO_LINGER, struct.pack("ii", 1, 0))
    transport.abort()


def text_frame(payload: bytes) -> bytes:
    """One unmasked, final WebSocket text frame (RFC 6455 5.2), as a server sends it."""
    size = len(payload)
    if size < 126:
        header = bytes((0x81, size))
    elif size < 1 << 16:
        header = b"\x81\x7e" + size.to_bytes(2, "big")
    else:
        header = b"\x81\x7f" + size.to_bytes(8, "big")
    return header + payload


class Message:
    """One rendered message (JSON), as text for queued watchers and as a frame for direct ones;
    with the screening's version it brings a client to (None: a resync's map, which has none)."""

    __slots__ = ("_frame", "payload", "version")

    def __init__(self, payload: bytes, version: int | None = None) -> None:
        self.payload = payload
        self.version = version
        self._frame: bytes | None = None

    @property
    def text(self) -> str:
        return self.payload.decode()

    @property
    def frame(self) -> bytes:
        if self._frame is None:
            self._frame = text_frame(self.payload)
        return self._frame


# One event as its audiences see it: the public's message, and each watching owner's own.
Rendered = tuple[Message, dict[int, Message]]


def seen_by(event: Rendered, viewer: int | None) -> Message:
    public, private = event
    return public if viewer is None else private.get(viewer, public)


class Watcher:
    """One WebSocket client of one screening; ``user_id`` None when anonymous.

    A watcher with a ``socket`` has no queue: an asyncio.Queue is ~2.5 KB, a tenth of what a
    connection may cost (loadtests/wsmemory.py), and it would stay empty. ``on_drop`` tells the
    connection's owner that it was dropped (the queued path learns it from the CLOSE queued)."""

    __slots__ = (
        "dropped",
        "held",
        "last_sent",
        "on_drop",
        "queue",
        "room",
        "screening_id",
        "socket",
        "user_id",
    )

    def __init__(self, room: Room, screening_id: int, user_id: int | None, socket: Socket | None):
        self.room = room
        self.screening_id = screening_id
        self.user_id = user_id
        self.socket = socket  # set: frames are written to it, no queue
        self.queue: asyncio.Queue[str] | None = None if socket else asyncio.Queue(QUEUE_SIZE)
        self.dropped = False
        self.last_sent = 0.0  # loop time of this client's last own write (``idle_since``)
        # Not None while the client is being replayed what it missed (``replaying``): live
        # events wait here until the replay is sent (``go_live``).
        self.held: list[Message] | None = None
        self.on_drop: Callable[[], None] | None = None

    def idle_since(self) -> float:
        """Loop time of the last frame written to it, its own or its room's."""
        return max(self.last_sent, self.room.sent_at)

    def send(self, frame: bytes) -> bool:
        """Write ``frame`` now; False (nothing written) when the socket is closing or full."""
        socket = self.socket
        if socket is None or socket.is_closing() or socket.get_write_buffer_size() > MAX_BUFFERED:
            return False
        socket.write(frame)
        return True

    def offer(self, text: str) -> None:
        """One message of its own (a pong, a heartbeat), sent at once or queued."""
        if self.dropped:
            return
        if self.queue is None:
            self.deliver(Message(text.encode()), asyncio.get_running_loop().time())
            return
        try:
            self.queue.put_nowait(text)
        except asyncio.QueueFull:
            self.drop()

    def deliver(self, message: Message, now: float) -> None:
        """One message by the slow path (queued, replaying, or released after a replay)."""
        if self.held is not None:
            self._hold_back(message)
        elif self.queue is not None:
            self.offer(message.text)
        elif not self.dropped:
            if self.send(message.frame):
                self.last_sent = now
            else:
                self.drop()

    def replaying(self) -> None:
        """Hold live events back from now on (right after ``join``, before any await)."""
        self.held = []
        self.room.settle(self)

    def go_live(self, version: int) -> None:
        """The replay that brought the client to ``version`` is sent: deliver the live events
        held back meanwhile that it did not already cover, then every event as it comes.

        No event falls between the two: the watcher joined before the replay was read, so an
        event published after that read (a version above it) was delivered to it, and held;
        held events at or below it were in the replay. Nothing awaits in here, so no fan-out
        interleaves, and the order stays that of publication. The hub's events still waiting
        for the end of the loop's turn must be fanned out first (``Hub.fan_out``): else one at
        or below ``version`` would reach the client after it, a second time."""
        held, self.held = self.held or [], None
        now = asyncio.get_running_loop().time()
        for message in held:
            if message.version is None or message.version > version:
                self.deliver(message, now)
        self.room.settle(self)

    def _hold_back(self, message: Message) -> None:
        held = self.held
        if self.dropped or held is None:
            return
        if len(held) >= QUEUE_SIZE:
            self.held = None
            self.drop()  # as slow as a full queue: reconnects, and resumes from its version
        else:
            held.append(message)

    def drop(self) -> None:
        """Too slow: let go, and counted so."""
        if self.dropped:
            return
        WS_CLIENTS_DROPPED.inc()
        queue = self.queue
        WS_EVENTS_DROPPED.inc((queue.qsize() if queue else 0) + 1)  # queued, and the one refused
        self.let_go()

    def let_go(self) -> None:
        """Send nothing more, and have the connection's owner close it (``on_drop``, or the
        CLOSE queued); ``room.ended`` says why when it is not for being too slow."""
        if self.dropped:
            return
        self.dropped = True
        self.room.settle(self)
        queue = self.queue
        if queue is not None:
            while not queue.empty():
                queue.get_nowait()
            queue.put_nowait(CLOSE)
        if self.on_drop is not None:
            self.on_drop()


class Room:
    """The watchers of one screening in this process.

    ``live`` maps the socket of every watcher written to directly, not replaying and not
    dropped, to it: the fan-out loop walks its keys alone. ``others`` are the rest (queued,
    replaying, dropped and not yet gone). ``named`` finds the watchers of a user, for the
    frames only the owner of a seat may see. ``sent_at``: loop time of the last fan-out, which
    reached every live watcher (their heartbeats wait for ``Watcher.idle_since``). ``ended``:
    why every watcher was let go (the screening was deleted), None while it is watched."""

    __slots__ = ("ended", "live", "named", "others", "sent_at")

    def __init__(self) -> None:
        self.live: dict[Socket, Watcher] = {}
        self.others: set[Watcher] = set()
        self.named: dict[int, list[Watcher]] = {}
        self.sent_at = 0.0
        self.ended: SeatLockError | None = None

    def __len__(self) -> int:
        return len(self.live) + len(self.others)

    def __iter__(self) -> Iterator[Watcher]:
        yield from self.live.values()
        yield from self.others

    def add(self, watcher: Watcher) -> None:
        self.others.add(watcher)
        if watcher.user_id is not None:
            self.named.setdefault(watcher.user_id, []).append(watcher)
        self.settle(watcher)

    def remove(self, watcher: Watcher) -> bool:
        """Take the watcher out; False when it was not in."""
        socket = watcher.socket
        if socket is not None and self.live.get(socket) is watcher:
            del self.live[socket]
        elif watcher in self.others:
            self.others.discard(watcher)
        else:
            return False
        if watcher.user_id is not None:
            same = self.named[watcher.user_id]
            same.remove(watcher)
            if not same:
                del self.named[watcher.user_id]
        return True

    def settle(self, watcher: Watcher) -> None:
        """Put a member where its state says: ``live`` or ``others``."""
        socket = watcher.socket
        live = socket is not None and watcher.held is None and not watcher.dropped
        if live and watcher in self.others:
            self.others.discard(watcher)
            self.live[socket] = watcher  # type: ignore[index]  # not None when live
        elif not live and socket is not None and self.live.get(socket) is watcher:
            del self.live[socket]
            self.others.add(watcher)

    def fan_out(self, events: list[Rendered], now: float) -> None:
        """Send events (in publish order) to every watcher: see the module's doc."""
        for watcher in list(self.others):
            for event in events:
                watcher.deliver(seen_by(event, watcher.user_id), now)
        if self.live:
            self._write_live(events, now)

    def _write_live(self, events: list[Rendered], now: float) -> None:
        live, bound, slow = self.live, MAX_BUFFERED, []
        owners = [w for _, private in events for user in private for w in self.named[user]]
        apart = {w.socket for w in owners if w.socket in live and w.held is None}
        data = events[0][0].frame if len(events) == 1 else b"".join(p.frame for p, _ in events)
        # The loop every frame takes once per watcher: keep it free of anything per watcher
        # but the two flow-control calls and the write (all in C on uvloop's transports).
        for socket in live:
            if socket in apart:
                continue
            if socket.is_closing() or socket.get_write_buffer_size() > bound:
                slow.append(socket)
            else:
                socket.write(data)
        for socket in apart:
            watcher = live[socket]
            if not watcher.send(b"".join(seen_by(e, watcher.user_id).frame for e in events)):
                slow.append(socket)
        self.sent_at = now
        for socket in slow:
            live[socket].drop()  # out of ``live`` (``settle``); its owner closes it
