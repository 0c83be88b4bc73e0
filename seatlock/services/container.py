"""The services a process holds for its lifetime, built once by the composition root
(``seatlock/server/wiring.py``) and handed to every request."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import asyncpg
from redis.asyncio import Redis
from redis.asyncio.cluster import RedisCluster

from db.discovery import SalesTally
from db.layouts import Layouts
from db.pool import ReplicaReads
from db.reservations import HistoryWriter
from db.tickets import BookingWriter
from seatlock.accounts.mail import Mailer
from seatlock.accounts.media import Storage
from seatlock.accounts.passwords import Hasher
from seatlock.accounts.sessions import SessionTrust
from seatlock.accounts.tokens import TokenCodec
from seatlock.engine.events import Hub
from seatlock.engine.seats import SeatEngine
from seatlock.heartbeats import Heartbeats
from seatlock.services.bookings import BookingService
from seatlock.services.holds import HoldService
from seatlock.services.reconciler import Reconciler
from seatlock.services.seatmaps import SeatMapCache
from seatlock.settings import Settings


@dataclass
class Services:
    settings: Settings
    redis: Redis | RedisCluster
    db: asyncpg.Pool  # the primary: writes, and every read a user must find their writes in
    # Reads that tolerate seconds of lag (anonymous catalog browsing, admin statistics): on the
    # replica of SEATLOCK_DATABASE_READ_URL while it keeps up, on ``db`` otherwise.
    read_db: ReplicaReads
    tokens: TokenCodec
    passwords: Hasher  # bcrypt on its own bounded lane of threads
    mailer: Mailer
    media: Storage  # uploaded profile pictures
    sessions: SessionTrust  # which sessions this process may trust without asking Redis
    engine: SeatEngine
    hub: Hub
    layouts: Layouts  # seat details per screening, cached per process
    sales: SalesTally  # last week's tickets sold per movie (trending, recommendations)
    history_writer: HistoryWriter  # hold history, written in the background
    booking_writer: BookingWriter  # group commit of bookings
    holds: HoldService  # hold, extend, cancel, list holds
    bookings: BookingService  # book, replay by payment id, cancel and change tickets
    reconciler: Reconciler  # repairs Redis's sold seats from PostgreSQL; counts its repairs
    seatmaps: SeatMapCache[Any]  # rendered seat maps (api/seatmaps.py), invalidated on change
    heartbeats: Heartbeats  # the background loops' last beats (readiness, /metrics)
