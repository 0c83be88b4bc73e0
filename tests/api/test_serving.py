"""The server's transport: a response's head leaves with its body, every byte in order."""

from __future__ import annotations

import asyncio

from seatlock.server.serving import HeadWithBody
from tests.support import LiveServer

HEAD = b"HTTP/1.1 200 OK\r\ncontent-length: 2\r\n\r\n"


class Recorder:
    """Records what reaches the socket (a stand-in for the loop's transport)."""

    def __init__(self) -> None:
        self.sent: list[bytes] = []
        self.closed = False

    def write(self, data: bytes) -> None:
        self.sent.append(bytes(data))

    def is_closing(self) -> bool:
        return self.closed

    def close(self) -> None:
        self.closed = True

    def get_write_buffer_size(self) -> int:
        return 0

    def get_extra_info(self, name: str) -> str:
        return f"info:{name}"


async def test_head_and_body_leave_in_one_write() -> None:
    real = Recorder()
    transport = HeadWithBody(real)  # type: ignore[arg-type]
    transport.write(HEAD)
    assert real.sent == [] and transport.get_write_buffer_size() == len(HEAD)
    transport.write(b"{}")
    assert real.sent == [HEAD + b"{}"]
    await asyncio.sleep(0)
    assert real.sent == [HEAD + b"{}"]  # nothing left to flush


async def test_a_head_without_body_leaves_at_the_end_of_the_iteration() -> None:
    real = Recorder()
    transport = HeadWithBody(real)  # type: ignore[arg-type]
    transport.write(HEAD)  # e.g. a 204, or a HEAD request
    await asyncio.sleep(0)
    assert real.sent == [HEAD]


async def test_other_writes_are_not_held_and_keep_their_order() -> None:
    real = Recorder()
    transport = HeadWithBody(real)  # type: ignore[arg-type]
    transport.write(b"\x81\x02{}")  # a WebSocket frame
    assert real.sent == [b"\x81\x02{}"]
    transport.write(HEAD)
    transport.close()  # a held head is sent before the socket closes
    assert real.sent == [b"\x81\x02{}", HEAD] and real.closed
    assert transport.get_extra_info("peername") == "info:peername"


async def test_keep_alive_responses_arrive_whole_and_in_order(server: LiveServer) -> None:
    reader, writer = await asyncio.open_connection("127.0.0.1", server.port)
    try:
        request = b"GET /health/live HTTP/1.1\r\nHost: t\r\n\r\n"
        writer.write(request * 3)  # pipelined: three heads and bodies on one connection
        for _ in range(3):
            head = await asyncio.wait_for(reader.readuntil(b"\r\n\r\n"), 5)
            assert head.startswith(b"HTTP/1.1 200 OK")
            length = int(head.lower().split(b"content-length: ")[1].split(b"\r\n")[0])
            assert await reader.readexactly(length) == b'{"status":"alive"}'
    finally:
        writer.close()
        await writer.wait_closed()
