"""The password hashing lane (seatlock/accounts/passwords.py Hasher), with real bcrypt: its
bound on waiting, its Retry-After, and that nothing else waits behind it."""

from __future__ import annotations

import asyncio
import time
from collections.abc import Callable, Iterator
from typing import Any

import bcrypt
import pytest

from seatlock.accounts.passwords import BUSY, Hasher
from seatlock.errors import Unavailable, ValidationFailed

PASSWORD = "lane-pass-123"
Lane = Callable[..., Hasher]


@pytest.fixture
def lane() -> Iterator[Lane]:
    """Makes the test's hashers (``Hasher``'s arguments), and closes them after it."""
    made: list[Hasher] = []

    def make(*args: Any, **kwargs: Any) -> Hasher:
        made.append(Hasher(*args, **kwargs))
        return made[-1]

    yield make
    for hasher in made:
        hasher.close()


async def test_hash_and_verify(lane: Lane) -> None:
    hasher = lane(4)
    await hasher.start()
    hashed = await hasher.hash(PASSWORD)
    assert hashed.startswith("$2b$04$")
    assert await hasher.verify(PASSWORD, hashed)
    assert not await hasher.verify("other-pass-123", hashed)
    assert not await hasher.verify(PASSWORD, None)  # no account: a dummy check, and no
    assert not await hasher.verify("x" * 73, hashed)  # past bcrypt's 72 bytes: no
    with pytest.raises(ValidationFailed):
        await hasher.hash("short1")
    assert hasher.pending == 0


async def test_a_burst_beyond_the_wait_is_refused_at_once_with_retry_after(lane: Lane) -> None:
    # Cost 10 (~50 ms a hash here) on one thread; at most 0.2 s of waiting: a burst of 30 has
    # a few hashed, the rest refused at once, none left waiting for seconds.
    hasher = lane(10, threads=1, max_wait_s=0.2)
    hashed = bcrypt.hashpw(PASSWORD.encode(), bcrypt.gensalt(10)).decode()
    await hasher.start()
    assert hasher.per_hash_s > 0

    async def sign_in() -> tuple[bool | Unavailable, float]:
        started = time.perf_counter()
        try:
            answer: bool | Unavailable = await hasher.verify(PASSWORD, hashed)
        except Unavailable as exc:
            answer = exc
        return answer, time.perf_counter() - started

    answers = await asyncio.gather(*(sign_in() for _ in range(30)))
    checked = [took for answer, took in answers if answer is True]
    refused = [(a, took) for a, took in answers if isinstance(a, Unavailable)]
    assert len(checked) + len(refused) == 30
    assert checked and refused
    for exc, took in refused:
        assert exc.detail == BUSY
        assert exc.retry_after is not None and exc.retry_after >= 1
        assert took < 0.1  # refused at once, not after waiting
    # Each admitted one waited at most about the bound, plus its own hash and the slack a
    # busy machine needs.
    assert max(checked) < 2.0
    assert hasher.pending == 0
    assert await hasher.verify(PASSWORD, hashed)  # the lane admits again once drained


async def test_a_hash_that_waited_too_long_for_its_thread_is_refused_unhashed(lane: Lane) -> None:
    # Not started: the lane has no timing yet, so it admits three at once; the second and third
    # wait for the first (~0.2 s at cost 12) beyond the 10 ms allowed and LATE_SLACK_S, and are
    # refused unhashed.
    hasher = lane(12, threads=1, max_wait_s=0.01)
    hashed = bcrypt.hashpw(PASSWORD.encode(), bcrypt.gensalt(12)).decode()
    answers = await asyncio.gather(
        *(hasher.verify(PASSWORD, hashed) for _ in range(3)), return_exceptions=True
    )
    assert answers[0] is True
    assert all(isinstance(a, Unavailable) and a.detail == BUSY for a in answers[1:])
    assert hasher.pending == 0


async def test_other_thread_work_does_not_wait_behind_hashing(lane: Lane) -> None:
    # Forty hashes queued on the lane (~2 s of work); work on the default thread pool (seat map
    # compression, /metrics, media) goes through at once. On that pool, as hashing was, it
    # would wait behind them for a thread.
    hasher = lane(10, threads=1, max_wait_s=60)
    await hasher.start()
    hashes = asyncio.gather(*(hasher.hash(PASSWORD) for _ in range(40)))
    await asyncio.sleep(0.01)
    started = time.perf_counter()
    assert await asyncio.to_thread(lambda: 42) == 42
    assert time.perf_counter() - started < 0.25
    assert not hashes.done()
    assert len(await hashes) == 40
