"""Sign-ins beyond the password hashing lane: 503 with Retry-After at once, and a refused sign-in
is not counted as a guess (the login throttle takes it back)."""

from __future__ import annotations

import asyncio
from collections.abc import Callable

import asyncpg
import bcrypt
import httpx

from seatlock.accounts.passwords import BUSY
from tests.support import PASSWORD, LiveServer, make_account

LOGIN = "/api/v1/auth/login"


async def test_a_sign_in_refused_by_a_full_lane_is_a_503_and_no_guess(
    make_server: Callable[..., LiveServer], backend_urls: tuple[str, str]
) -> None:
    # No wait allowed: while one hash runs, every other sign-in is refused at once.
    server = make_server(password_wait_seconds=0)
    async with httpx.AsyncClient(base_url=server.url, timeout=30) as client:
        slow = await make_account(client, "lane-slow@example.com", "Slow")
        quick = await make_account(client, "lane-quick@example.com", "Quick")
        # The slow account's hash at cost 14 (~1 s a check): its sign-in holds the lane.
        costly = await asyncio.to_thread(bcrypt.hashpw, PASSWORD.encode(), bcrypt.gensalt(14))
        conn = await asyncpg.connect(backend_urls[1])
        try:
            await conn.execute(
                "UPDATE users SET password_hash = $1 WHERE id = $2", costly.decode(), slow.id
            )
        finally:
            await conn.close()

        holding = asyncio.create_task(
            client.post(LOGIN, json={"email": slow.email, "password": PASSWORD})
        )
        lane = server.app.state.services.passwords
        for _ in range(500):  # until its check runs (read from the server's thread: a counter)
            if lane.pending:
                break
            await asyncio.sleep(0.01)
        assert lane.pending == 1
        body = {"email": quick.email, "password": PASSWORD}
        refusals = 0
        while not holding.done() and refusals < 8:
            r = await client.post(LOGIN, json=body)
            if r.status_code != 503:  # the lane was free: only once the slow check is done
                break
            assert r.json() == {"detail": BUSY}
            assert int(r.headers["retry-after"]) >= 1
            refusals += 1
        # More refusals than the throttle's 5 attempts a pair: none of them counted.
        assert refusals == 8, refusals
        assert (await holding).status_code == 200
        r = await client.post(LOGIN, json=body)
        assert r.status_code == 200, r.text
