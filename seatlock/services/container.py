"""The services a process holds for its lifetime, built once in the app's lifespan."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

import asyncpg
from redis.asyncio import Redis

from seatlock.accounts.mail import Mailer
from seatlock.accounts.tokens import TokenCodec
from seatlock.settings import Settings


@dataclass
class Services:
    settings: Settings
    redis: Redis
    db: asyncpg.Pool
    tokens: TokenCodec
    mailer: Mailer
    # Filled in by the parts that own them (engine, event hub, ...), keyed by name.
    extras: dict[str, Any] = field(default_factory=dict)
