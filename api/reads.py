"""Which PostgreSQL server a request's catalog read goes to (SEATLOCK_DATABASE_READ_URL).

The rule, read-your-writes without any state shared between hosts: a request that carries a
bearer token reads the primary, so whoever just wrote (an admin who created a movie, a user who
posted a review) finds the write in the next answer, whichever worker or host serves it. Every
write needs a token, so an anonymous request has no write of its own to miss: it reads the replica
(``Services.read_db``), which may be up to SEATLOCK_DATABASE_READ_MAX_LAG_SECONDS behind, less than
the max-age=30 that public caches already keep catalog answers for. The token is not checked
here: a bad one costs only a read on the primary.
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable
from typing import Concatenate, ParamSpec, TypeVar

import asyncpg

from api.auth import bearer_token
from api.routing import Call

P = ParamSpec("P")
T = TypeVar("T")


async def catalog_read(
    call: Call,
    query: Callable[Concatenate[asyncpg.Pool, P], Awaitable[T]],
    *args: P.args,
    **kwargs: P.kwargs,
) -> T:
    """``query(pool, *args, **kwargs)`` on the replica for an anonymous caller, on the primary
    for one that sent a token (or when the replica is off, behind or failing)."""
    if call.principal is not None or bearer_token(call.scope["headers"]) is not None:
        return await query(call.services.db, *args, **kwargs)
    return await call.services.read_db.read(query, *args, **kwargs)
