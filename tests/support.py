"""Helpers shared by the tests: a live server in a thread, accounts, and catalog builders."""

from __future__ import annotations

import threading
import time
from dataclasses import dataclass
from typing import Any

import asyncpg
import httpx
import uvicorn

from api.app import create_app
from seatlock.embedded import free_port
from seatlock.settings import Settings

PASSWORD = "Sup3r-secret!"
PUBLIC = "public, max-age=30"  # Cache-Control of the public catalog lists


class LiveServer:
    """The real app on a free loopback port, served by uvicorn in a background thread."""

    def __init__(self, settings: Settings) -> None:
        self.settings = settings
        self.port = free_port()
        config = uvicorn.Config(
            create_app(settings),
            host="127.0.0.1",
            port=self.port,
            log_level="warning",
            lifespan="on",
            ws_ping_interval=None,
        )
        self._server = uvicorn.Server(config)
        self._thread = threading.Thread(target=self._server.run, daemon=True)

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    @property
    def ws_url(self) -> str:
        return f"ws://127.0.0.1:{self.port}"

    def start(self) -> None:
        self._thread.start()
        deadline = time.monotonic() + 30
        while not self._server.started:
            if not self._thread.is_alive() or time.monotonic() > deadline:
                raise RuntimeError("test server did not start")
            time.sleep(0.01)

    def stop(self) -> None:
        self._server.should_exit = True
        self._thread.join(timeout=15)


@dataclass
class Account:
    id: int
    email: str
    password: str
    token: str
    refresh_token: str

    @property
    def headers(self) -> dict[str, str]:
        return {"Authorization": f"Bearer {self.token}"}


async def login(client: httpx.AsyncClient, email: str, password: str = PASSWORD) -> dict[str, Any]:
    r = await client.post("/api/v1/auth/login", json={"email": email, "password": password})
    assert r.status_code == 200, r.text
    data: dict[str, Any] = r.json()
    return data


async def make_account(
    client: httpx.AsyncClient, email: str, full_name: str, *, admin_db: str | None = None
) -> Account:
    r = await client.post(
        "/api/v1/auth/register",
        json={"email": email, "password": PASSWORD, "full_name": full_name},
    )
    assert r.status_code == 201, r.text
    user_id = r.json()["id"]
    if admin_db:
        conn = await asyncpg.connect(admin_db)
        try:
            await conn.execute("UPDATE users SET role = 'admin' WHERE id = $1", user_id)
        finally:
            await conn.close()
    tokens = await login(client, email)
    return Account(user_id, email, PASSWORD, tokens["access_token"], tokens["refresh_token"])


def ids(r: httpx.Response) -> list[int]:
    assert r.status_code == 200, r.text
    return [item["id"] for item in r.json()]
