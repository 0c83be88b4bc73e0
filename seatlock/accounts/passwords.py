"""bcrypt hashing, never on the event loop: on a lane of worker threads of its own (``Hasher``).

A bcrypt check at the default cost (12) takes ~0.2 s of CPU, so a crowd signing in at the moment
a sale opens asks for far more hashing than the machine has. On asyncio's default thread pool
(six threads a process, its queue unbounded), 200 users signing in at once on two cores while 16
connections read a seat map (``python -m loadtests.loginstorm``) waited up to 29 s; the seat-map
reads served meanwhile fell by three quarters (p99 2 ms to 23 ms), and ``/metrics``, rendered on
the same pool, took up to 15 s. The lane bounds each of these:

- ``SEATLOCK_PASSWORD_HASH_THREADS`` threads per process hash (1 by default), so hashing takes at
  most that many cores' worth from serving, however many sign-ins wait;
- a hash that would wait longer than ``SEATLOCK_PASSWORD_WAIT_SECONDS`` for a thread is refused
  at once with 503 and a Retry-After of when it would be admitted (``Unavailable``), and one
  that has waited that long after all is refused unhashed: no request waits minutes in a queue
  behind hashes whose clients may have given up;
- nothing else waits behind it: the default pool keeps serving compression, media and metrics.

The wait is estimated from the hashes ahead and the time per hash: a moving average of their
durations (which include the CPU they did not get), or the time the running hash has taken so far
when that is longer; ``start`` times the first. Sign-in (a check), registration and password
changes (a hash) share the lane; a check for an unknown account runs as long against a dummy
hash, so the time an answer takes does not tell which accounts exist.
"""

from __future__ import annotations

import asyncio
import math
import threading
import time
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from typing import TypeVar

import bcrypt

from seatlock.errors import Unavailable, ValidationFailed
from seatlock.metrics import PASSWORD_HASHES

MIN_LENGTH = 8
MAX_BYTES = 72  # bcrypt ignores (or, since bcrypt 5, refuses) anything past 72 bytes
# Weight of the newest hash in the moving average of the time per hash.
RECENT = 0.2
# An admitted hash counts as late once it has waited the bound and a hash's time more, or this
# long when hashes are quicker: a busy machine takes milliseconds to wake a thread.
LATE_SLACK_S = 0.1
BUSY = "Too many sign-ins at once; please try again shortly"

T = TypeVar("T")


def check_strength(password: str) -> None:
    """Raise ValidationFailed for a password we will not hash."""
    if "\x00" in password:
        raise ValidationFailed("Password must not contain NUL characters")
    if len(password) < MIN_LENGTH:
        raise ValidationFailed(f"Password must be at least {MIN_LENGTH} characters long")
    if len(password.encode()) > MAX_BYTES:
        raise ValidationFailed(f"Password must be at most {MAX_BYTES} bytes long")
    if password.isdigit() or password.isalpha():
        raise ValidationFailed("Password must mix letters with digits or symbols")


def _hashpw(password: str, rounds: int) -> str:
    return bcrypt.hashpw(password.encode(), bcrypt.gensalt(rounds)).decode()


async def hash_password(password: str, rounds: int = 12) -> str:
    """Hash outside any lane: for start-up (the configured admin), before a request is served."""
    check_strength(password)
    return await asyncio.to_thread(_hashpw, password, rounds)


class Hasher:
    """bcrypt at ``rounds`` on ``threads`` threads of its own; see the module's docstring."""

    def __init__(self, rounds: int = 12, *, threads: int = 1, max_wait_s: float = 5.0) -> None:
        self.rounds = rounds
        self.threads = threads
        self.max_wait_s = max_wait_s
        self._pool = ThreadPoolExecutor(threads, thread_name_prefix="seatlock-bcrypt")
        self._pending = 0  # hashes admitted and not finished: running or waiting for a thread
        self._per_hash_s = 0.0  # moving average of a hash's duration; 0: not timed yet
        self._dummy: bytes | None = None  # what an unknown account's password is checked against
        self._started: dict[int, float] = {}  # lane thread -> when its running hash started

    @property
    def pending(self) -> int:
        return self._pending

    @property
    def per_hash_s(self) -> float:
        return self._per_hash_s

    async def start(self) -> None:
        """Time one hash (the dummy one, at the lane's cost) so that the wait is estimated from
        the first request on."""
        if self._dummy is None:
            dummy = await self._run(_hashpw, ("seatlock-dummy", self.rounds), math.inf)
            self._dummy = dummy.encode()

    def close(self) -> None:
        """Stop the threads once their hash is done; hashes not started are dropped."""
        self._pool.shutdown(wait=False, cancel_futures=True)

    async def hash(self, password: str) -> str:
        check_strength(password)
        return await self._run(_hashpw, (password, self.rounds))

    async def verify(self, password: str, hashed: str | None) -> bool:
        """Check a password; with no hash (unknown account) spend the same time and say no."""
        raw = password.encode()
        if len(raw) > MAX_BYTES or b"\x00" in raw:
            return False
        if hashed is None:
            await self.start()
            assert self._dummy is not None
            target = self._dummy
        else:
            target = hashed.encode()
        ok = await self._run(bcrypt.checkpw, (raw, target))
        return ok and hashed is not None

    def expected_wait_s(self) -> float:
        """How long a hash asked for now would wait for a thread: the hashes ahead of it, at the
        recent time per hash, or at the time the longest running hash has taken so far when
        that is longer (hashing slowed down: the CPU went to serving)."""
        per_hash = self._per_hash_s
        # One call, no test first: a lane thread may remove its entry between two (the GIL
        # lets a thread run between bytecodes, not inside min()'s walk of the values).
        oldest = min(self._started.values(), default=None)
        if oldest is not None:
            per_hash = max(per_hash, time.perf_counter() - oldest)
        return self._pending // self.threads * per_hash

    async def _run(
        self, func: Callable[..., T], args: tuple[object, ...], allowed_s: float | None = None
    ) -> T:
        """``func(*args)`` on the lane, or Unavailable; ``allowed_s``: how long it may wait for
        a thread once admitted (by default the bound, plus what the estimate may miss by before
        a hash counts as late: ``_allowed_s``)."""
        wait = self.expected_wait_s()
        if wait > self.max_wait_s:
            PASSWORD_HASHES.labels("refused").inc()
            raise Unavailable(BUSY, retry_after=self._retry_after(wait))
        self._pending += 1
        try:
            done = await asyncio.get_running_loop().run_in_executor(
                self._pool,
                self._timed,
                func,
                args,
                time.perf_counter(),
                self._allowed_s() if allowed_s is None else allowed_s,
            )
        finally:
            self._pending -= 1
        if done is None:  # it waited too long for a thread after all: refused, unhashed
            PASSWORD_HASHES.labels("late").inc()
            raise Unavailable(BUSY, retry_after=self._retry_after(self.expected_wait_s()))
        result, took = done
        PASSWORD_HASHES.labels("done").inc()
        average = self._per_hash_s
        self._per_hash_s = took if average == 0 else average + RECENT * (took - average)
        return result

    def _allowed_s(self) -> float:
        return self.max_wait_s + max(self._per_hash_s, LATE_SLACK_S)

    def _retry_after(self, wait_s: float) -> int:
        """Seconds until the hashes now waiting leave a wait short enough to be admitted."""
        return max(1, math.ceil(wait_s - self.max_wait_s))

    def _timed(
        self, func: Callable[..., T], args: tuple[object, ...], queued_at: float, allowed_s: float
    ) -> tuple[T, float] | None:
        """On a lane thread: the result and how long it took, or None (nothing done) when the
        hash waited longer than ``allowed_s`` for the thread."""
        started = time.perf_counter()
        if started - queued_at > allowed_s:
            return None
        key = threading.get_ident()
        self._started[key] = started
        try:
            result = func(*args)
        finally:
            del self._started[key]
        return result, time.perf_counter() - started
