"""The bench's lean WebSocket client: against the real server, and frame by frame."""

from __future__ import annotations

import asyncio
import zlib

import asyncpg
import httpx
import orjson

from loadtests import wsclient
from seatlock.engine.events import text_frame
from tests import factories as make
from tests.support import Account, LiveServer, reserve

UPDATE = b'{"type":"seat_update","seat_id":1,"timestamp":"2026-12-05T13:00:00.000Z"}'


async def test_it_watches_a_real_screening(
    server: LiveServer, client: httpx.AsyncClient, db: asyncpg.Connection, user: Account
) -> None:
    show = await make.show(db, 3)
    seat = show.seat_ids[1]
    got: list[dict[str, object]] = []
    arrived = asyncio.Event()

    def on_messages(raws: list[bytes], received: float) -> None:
        for raw in raws:
            update = orjson.loads(raw)
            if update.get("status") == "reserved":  # not the last round's late "available"
                got.append(update)
                arrived.set()

    path = f"/ws/screenings/{show.id}"
    for offer in ("", "permessage-deflate"):  # plain and compressed frames alike
        got.clear()
        arrived.clear()
        watch = await wsclient.connect("127.0.0.1", server.port, path, on_messages, offer)
        try:
            assert orjson.loads(await watch.first)["type"] == "connection_confirmed"
            assert (await reserve(client, user, show, [seat])).status_code == 201
            await asyncio.wait_for(arrived.wait(), 5)
            assert got[0]["type"] == "seat_update" and got[0]["seat_id"] == seat
            cancel = f"/api/v1/seat-reservations/cancel/{show.id}?seat_ids={seat}"
            assert (await client.delete(cancel, headers=user.headers)).status_code == 204
        finally:
            watch.close()
        await asyncio.wait_for(watch.closed, 5)


async def test_a_refused_upgrade_fails_the_connect(server: LiveServer) -> None:
    try:
        await wsclient.connect("127.0.0.1", server.port, "/ws/nowhere", lambda *_: None)
    except wsclient.HandshakeFailed as exc:
        assert "403" in str(exc) or "404" in str(exc)
    else:
        raise AssertionError("connected to a WebSocket that does not exist")


class Transport:
    def __init__(self) -> None:
        self.sent: list[bytes] = []
        self.closing = False

    def write(self, data: bytes) -> None:
        self.sent.append(data)

    def is_closing(self) -> bool:
        return self.closing

    def close(self) -> None:
        self.closing = True


def unmasked(frame: bytes) -> tuple[int, bytes]:
    """A client frame's opcode and payload (control frames: under 126 bytes)."""
    mask, payload = frame[2:6], frame[6:]
    assert frame[1] & 0x80 and len(payload) == frame[1] & 0x7F  # masked, as a client must
    return frame[0] & 0x0F, bytes(b ^ mask[i % 4] for i, b in enumerate(payload))


async def test_frames_split_anywhere_fragments_pings_and_close() -> None:
    got: list[bytes] = []
    watch = wsclient.Watch(b"GET / HTTP/1.1\r\n\r\n", b"k", lambda raws, _: got.extend(raws))
    transport = Transport()
    watch.connection_made(transport)  # type: ignore[arg-type]
    assert transport.sent == [b"GET / HTTP/1.1\r\n\r\n"]
    hello = text_frame(b'{"type":"connection_confirmed"}')
    long = b'{"type":"seat_update","pad":"' + b"x" * 300 + b'"}'  # a 16-bit length
    stream = (
        b"HTTP/1.1 101 Switching Protocols\r\nSec-WebSocket-Accept: k\r\n\r\n"
        + hello
        + text_frame(UPDATE)
        + text_frame(long)
        + bytes([0x01, 3])  # a message in two fragments: text, then FIN continuation
        + b'{"a'
        + bytes([0x80, 4])
        + b'":1}'
        + b"\x89\x02hi"  # a ping
    )
    for at in range(0, len(stream), 7):  # in pieces that cut headers and payloads
        watch.data_received(stream[at : at + 7])
    assert watch.first.result() == b'{"type":"connection_confirmed"}'
    assert got == [UPDATE, long, b'{"a":1}']
    assert unmasked(transport.sent[-1]) == (wsclient.PONG, b"hi")
    deflate = zlib.compressobj(wbits=-zlib.MAX_WBITS)
    body = (deflate.compress(UPDATE) + deflate.flush(zlib.Z_SYNC_FLUSH))[:-4]
    watch.data_received(bytes([0xC1]) + text_frame(body)[1:])  # RSV1: permessage-deflate
    assert got[-1] == UPDATE
    watch.data_received(b"\x88\x02\x03\xe8")  # the server closes: answered, then dropped
    assert unmasked(transport.sent[-1]) == (wsclient.CLOSE, b"\x03\xe8")
    assert transport.closing


async def test_a_wrong_accept_key_is_no_handshake() -> None:
    watch = wsclient.Watch(b"", b"expected", lambda *_: None)
    transport = Transport()
    transport.abort = transport.close  # type: ignore[attr-defined]
    watch.connection_made(transport)  # type: ignore[arg-type]
    watch.data_received(b"HTTP/1.1 101 Switching Protocols\r\nSec-WebSocket-Accept: other\r\n\r\n")
    assert isinstance(watch.opened.exception(), wsclient.HandshakeFailed)
    assert transport.closing


def opened(reads: wsclient.Reads, got: list[list[bytes]]) -> wsclient.Watch:
    """A connection past its handshake and first message, sharing ``reads``."""
    watch = wsclient.Watch(b"", b"k", lambda raws, _: got.append(raws), reads)
    watch.connection_made(Transport())  # type: ignore[arg-type]
    hello = text_frame(b'{"type":"connection_confirmed"}')
    watch.data_received(b"HTTP/1.1 101 Switching Protocols\r\nSec-WebSocket-Accept: k\r\n\r\n")
    watch.data_received(hello)
    return watch


async def test_a_read_many_connections_get_alike_is_cut_once() -> None:
    reads = wsclient.Reads()
    first: list[list[bytes]] = []
    second: list[list[bytes]] = []
    a, b = opened(reads, first), opened(reads, second)
    other = b'{"type":"seat_update","seat_id":2}'
    fan_out = text_frame(UPDATE) + text_frame(other)
    a.data_received(bytes(fan_out))
    b.data_received(bytes(fan_out))  # equal bytes, another object: as from another socket
    assert first == second == [[UPDATE, other]]
    assert type(first[0]) is wsclient.Known and second[0] is first[0]  # handed over as it was
    # Not remembered: a read ending in a frame's start, one with a ping, a fragment.
    for read in (fan_out + text_frame(other)[:3], text_frame(UPDATE) + b"\x89\x02hi"):
        for watch in (a, b):
            watch.buffer = b""
            watch.data_received(bytes(read))
        assert read not in reads
    assert [UPDATE] in first[1:] and all(type(raws) is list for raws in first[1:])
    assert len(reads) == 1
