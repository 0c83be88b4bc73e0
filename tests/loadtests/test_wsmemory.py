"""The lean watcher of loadtests/wsmemory.py reads what the server sends (the script is the
measure; this only keeps its client honest)."""

from __future__ import annotations

import asyncio
import zlib

from loadtests.wsmemory import Watch
from seatlock.engine.events import text_frame

UPDATE = b'{"type":"seat_update","seat_id":1,"timestamp":"2026-12-05T13:00:00.000Z"}'


class Transport:
    def __init__(self) -> None:
        self.sent: list[bytes] = []

    def write(self, data: bytes) -> None:
        self.sent.append(data)


async def test_the_watcher_reads_handshake_frames_pings_and_compressed_updates() -> None:
    seen: dict[bytes, float] = {}
    confirmed: asyncio.Future[bool] = asyncio.get_running_loop().create_future()
    watch = Watch(seen, confirmed)
    transport = Transport()
    watch.connection_made(transport)  # type: ignore[arg-type]
    hello = text_frame(b'{"type":"connection_confirmed"}')
    watch.data_received(b"HTTP/1.1 101 Switching Protocols\r\n\r\n" + hello[:3])
    assert not confirmed.done()
    watch.data_received(hello[3:] + text_frame(UPDATE) + b"\x89\x02hi")
    assert confirmed.result() is True and UPDATE in seen
    assert transport.sent == [b"\x8a\x82\x00\x00\x00\x00hi"]  # the ping answered, masked
    deflate = zlib.compressobj(wbits=-zlib.MAX_WBITS)
    other = UPDATE.replace(b'seat_id":1', b'seat_id":2')
    body = (deflate.compress(other) + deflate.flush(zlib.Z_SYNC_FLUSH))[:-4]
    watch.data_received(bytes([0xC1]) + text_frame(body)[1:])  # RSV1: permessage-deflate
    assert other in seen
