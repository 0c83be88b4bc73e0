"""Deleting the account rows that can no longer matter, so PostgreSQL does not grow for ever.

Every sign-in adds a session (and its refresh tokens), every forgotten password a reset token,
and nothing else removes them: a server running for months kept every one, expired or revoked.
Each process deletes, once at start and then every PRUNE_EVERY_S, the sessions that expired or
were revoked, and the reset tokens that expired, more than KEPT_FOR ago (db/users.py
``prune_credentials``): by then no access token of such a session is still valid (they last
minutes), and a request naming one is refused as before. Bookings, tickets and the hold history
are records, and are kept.
"""

from __future__ import annotations

import asyncio
import logging
from datetime import timedelta

from db import users
from db.pool import DATABASE_FAILED, Executor
from seatlock.heartbeats import Beat, no_beat, pause

logger = logging.getLogger(__name__)

PRUNE_EVERY_S = 3600.0
KEPT_FOR = timedelta(days=1)
PRUNE_BATCH = 1000  # rows per statement: one pass never holds many locks at once


async def prune_once(db: Executor, kept_for: timedelta = KEPT_FOR) -> int:
    """Delete every dead session and reset token past ``kept_for``, a batch at a time."""
    total = 0
    while True:
        deleted = await users.prune_credentials(db, kept_for, PRUNE_BATCH)
        total += deleted
        if deleted < PRUNE_BATCH:
            return total


async def prune_forever(
    db: Executor, stop: asyncio.Event, beat: Beat = no_beat, every_s: float = PRUNE_EVERY_S
) -> None:
    """``prune_once`` now and every ``every_s`` seconds until ``stop`` is set."""
    while not stop.is_set():
        try:
            if deleted := await prune_once(db):
                logger.info("deleted %d expired or revoked sessions and reset tokens", deleted)
        except DATABASE_FAILED as exc:
            logger.warning("expired sessions and reset tokens not deleted: %r", exc)
        beat()
        await pause(stop, every_s, beat)
