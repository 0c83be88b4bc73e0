"""The asyncpg pool: bounded, with JSON codecs, created once per process."""

from __future__ import annotations

from typing import TYPE_CHECKING, Any, TypeAlias

import asyncpg
import orjson

if TYPE_CHECKING:
    from asyncpg.pool import PoolConnectionProxy

# PostgreSQL cannot answer now: down, restarting, in recovery, out of connections or resources,
# or the connection broke (also while a pool releases it, after the work was done). The api
# answers these with 503 and Retry-After (api/errors.py); anything else from asyncpg is a bug or
# a refusal the caller names (UniqueViolationError ...). TimeoutError (command_timeout) and
# ConnectionRefusedError are OSErrors.
DATABASE_DOWN: tuple[type[Exception], ...] = (
    asyncpg.exceptions.PostgresConnectionError,  # 08*: lost, refused, failed, does not exist
    # 57*: admin or crash shutdown, "the database system is starting up / in recovery"
    # (CannotConnectNowError), a cancelled query
    asyncpg.exceptions.OperatorInterventionError,
    asyncpg.exceptions.InsufficientResourcesError,  # 53*: too many connections, disk, memory
    asyncpg.exceptions.PostgresSystemError,  # 58*: I/O error on the server
    asyncpg.exceptions.InterfaceError,  # "connection is closed", pool closing
    asyncpg.exceptions.InternalClientError,  # e.g. a protocol error releasing a broken connection
    OSError,
)

# Anything queries can run on: a connection, or a connection borrowed from a pool; or a pool.
Conn: TypeAlias = "asyncpg.Connection[Any] | PoolConnectionProxy[Any]"
Executor: TypeAlias = "asyncpg.Pool[Any] | Conn"


async def _init_connection(conn: asyncpg.Connection) -> None:
    for kind in ("json", "jsonb"):
        await conn.set_type_codec(
            kind, schema="pg_catalog", encoder=_dumps, decoder=orjson.loads, format="text"
        )


def _dumps(value: Any) -> str:
    return orjson.dumps(value).decode()


async def create_pool(dsn: str, *, min_size: int = 2, max_size: int = 10) -> asyncpg.Pool:
    pool = await asyncpg.create_pool(
        dsn,
        min_size=min_size,
        max_size=max_size,
        init=_init_connection,
        command_timeout=30,
        max_inactive_connection_lifetime=300,
    )
    assert pool is not None
    return pool
