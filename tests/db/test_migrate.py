from __future__ import annotations

import asyncio
import sys
from pathlib import Path

import asyncpg
import pytest

from db.migrate import migrate, migration_files

ALL = [path.stem for path in migration_files()]
RUN_MIGRATE = (
    "import asyncio, sys, asyncpg\n"
    "from db.migrate import migrate\n"
    "async def main():\n"
    "    conn = await asyncpg.connect(sys.argv[1])\n"
    "    print(','.join(await migrate(conn)))\n"
    "    await conn.close()\n"
    "asyncio.run(main())\n"
)


async def recorded(url: str) -> list[str]:
    conn = await asyncpg.connect(url)
    try:
        rows = await conn.fetch("SELECT version FROM schema_migrations ORDER BY version")
        return [r["version"] for r in rows]
    finally:
        await conn.close()


async def tables(url: str) -> set[str]:
    conn = await asyncpg.connect(url)
    try:
        rows = await conn.fetch("SELECT tablename FROM pg_tables WHERE schemaname = 'public'")
        return {r["tablename"] for r in rows}
    finally:
        await conn.close()


async def test_migrating_twice_is_a_no_op(fresh_url: str) -> None:
    conn = await asyncpg.connect(fresh_url)
    try:
        assert await migrate(conn) == ALL
        before = await tables(fresh_url)
        assert await migrate(conn) == []
    finally:
        await conn.close()
    assert await recorded(fresh_url) == ALL
    assert await tables(fresh_url) == before
    assert {"users", "cinemas", "seats", "screenings", "tickets", "schema_migrations"} <= before


async def test_racing_connections_apply_each_migration_once(fresh_url: str) -> None:
    conns = [await asyncpg.connect(fresh_url) for _ in range(4)]
    try:
        results = await asyncio.gather(*(migrate(c) for c in conns))
    finally:
        await asyncio.gather(*(c.close() for c in conns))
    assert sorted(v for applied in results for v in applied) == ALL
    assert await recorded(fresh_url) == ALL


async def test_racing_processes_leave_one_schema(fresh_url: str) -> None:
    procs = [
        await asyncio.create_subprocess_exec(
            sys.executable,
            "-c",
            RUN_MIGRATE,
            fresh_url,
            stdout=asyncio.subprocess.PIPE,
            stderr=asyncio.subprocess.PIPE,
        )
        for _ in range(2)
    ]
    outputs = await asyncio.gather(*(p.communicate() for p in procs))
    assert [p.returncode for p in procs] == [0, 0], [err.decode() for _, err in outputs]
    applied = [v for out, _ in outputs for v in out.decode().strip().split(",") if v]
    assert sorted(applied) == ALL
    assert await recorded(fresh_url) == ALL


async def test_a_failing_migration_leaves_nothing_behind(fresh_url: str, tmp_path: Path) -> None:
    (tmp_path / "0001_good.sql").write_text("CREATE TABLE good (id int);")
    (tmp_path / "0002_bad.sql").write_text("CREATE TABLE half (id int); SELECT 1 / 0;")
    conn = await asyncpg.connect(fresh_url)
    try:
        with pytest.raises(asyncpg.DivisionByZeroError):
            await migrate(conn, tmp_path)
        assert await recorded(fresh_url) == ["0001_good"]
        assert "half" not in await tables(fresh_url)
        (tmp_path / "0002_bad.sql").write_text("CREATE TABLE half (id int);")
        # The advisory lock was released: a second run neither waits nor repeats 0001.
        assert await asyncio.wait_for(migrate(conn, tmp_path), 5) == ["0002_bad"]
    finally:
        await conn.close()
    assert {"good", "half"} <= await tables(fresh_url)
