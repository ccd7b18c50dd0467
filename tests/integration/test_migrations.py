from __future__ import annotations

import asyncio
import uuid
from collections.abc import AsyncIterator

import asyncpg
import pytest

from sharevault.db import ensure_database, migrate, migration_files
from tests.support.environment import admin_sql, dsn_for


@pytest.fixture
async def empty_dsn() -> AsyncIterator[str]:
    name = f"sv_empty_{uuid.uuid4().hex[:10]}"
    yield dsn_for(name)
    await admin_sql(f"DROP DATABASE IF EXISTS {name} WITH (FORCE)")


async def test_migrate_creates_database_and_is_idempotent(empty_dsn: str) -> None:
    assert await ensure_database(empty_dsn) is True
    assert await ensure_database(empty_dsn) is False
    first = await migrate(empty_dsn)
    assert first == [f"{n:04d}_{name}" for n, name, _ in migration_files()]
    assert await migrate(empty_dsn) == []
    conn = await asyncpg.connect(empty_dsn)
    try:
        versions = await conn.fetch("SELECT version FROM schema_migrations ORDER BY version")
        assert [r["version"] for r in versions] == [n for n, _, _ in migration_files()]
        assert await conn.fetchval("SELECT count(*) FROM shares") == 0
    finally:
        await conn.close()


async def test_concurrent_migrations_apply_once(empty_dsn: str) -> None:
    await ensure_database(empty_dsn)
    results = await asyncio.gather(*(migrate(empty_dsn) for _ in range(4)))
    applied = [name for result in results for name in result]
    assert sorted(applied) == [f"{n:04d}_{name}" for n, name, _ in migration_files()]
