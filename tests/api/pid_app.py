"""An ASGI app that answers every request with its process id (tests/api/test_workers.py)."""

from __future__ import annotations

import os
from typing import Any


async def app(scope: dict[str, Any], receive: Any, send: Any) -> None:
    body = str(os.getpid()).encode()
    headers = [(b"content-type", b"text/plain"), (b"content-length", b"%d" % len(body))]
    await send({"type": "http.response.start", "status": 200, "headers": headers})
    await send({"type": "http.response.body", "body": body})


async def failing_start(scope: dict[str, Any], receive: Any, send: Any) -> None:
    """``app``, whose start-up fails while the file named by $PID_APP_FAIL_WHILE exists (what a
    worker of seatlock serve meets when PostgreSQL or Redis is down as it starts)."""
    if scope["type"] != "lifespan":
        await app(scope, receive, send)
        return
    while True:
        message = await receive()
        if message["type"] == "lifespan.startup":
            if os.path.exists(os.environ["PID_APP_FAIL_WHILE"]):  # noqa: ASYNC240 - a test app
                await send({"type": "lifespan.startup.failed", "message": "told to fail"})
                return
            await send({"type": "lifespan.startup.complete"})
        elif message["type"] == "lifespan.shutdown":
            await send({"type": "lifespan.shutdown.complete"})
            return
