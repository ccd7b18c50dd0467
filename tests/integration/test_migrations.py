"""The migrator on empty databases: idempotent, concurrent, checksummed, taking over old tables."""

from __future__ import annotations

import asyncio
import os
import uuid
from collections.abc import AsyncIterator

import asyncpg
import pytest

from sharevault.db import (
    MigrationError,
    ensure_database,
    migrate,
    migration_files,
    migration_status,
)
from tests.support.environment import admin_sql, dsn_for
from tests.support.processes import run_cli

LABELS = [m.label for m in migration_files()]


@pytest.fixture
async def empty_dsn() -> AsyncIterator[str]:
    name = f"sv_empty_{uuid.uuid4().hex[:10]}"
    yield dsn_for(name)
    await admin_sql(f"DROP DATABASE IF EXISTS {name} WITH (FORCE)")


async def sql(dsn: str, statement: str) -> None:
    conn = await asyncpg.connect(dsn)
    try:
        await conn.execute(statement)
    finally:
        await conn.close()


async def test_migrate_creates_database_and_is_idempotent(empty_dsn: str) -> None:
    assert await ensure_database(empty_dsn) is True
    assert await ensure_database(empty_dsn) is False
    assert await migrate(empty_dsn) == LABELS
    assert await migrate(empty_dsn) == []
    conn = await asyncpg.connect(empty_dsn)
    try:
        rows = await conn.fetch(
            "SELECT version, checksum FROM sharevault_schema_migrations ORDER BY version"
        )
        assert [(r["version"], r["checksum"]) for r in rows] == [
            (m.number, m.checksum) for m in migration_files()
        ]
        assert await conn.fetchval("SELECT to_regclass('schema_migrations')") is None
        assert await conn.fetchval("SELECT count(*) FROM shares") == 0
    finally:
        await conn.close()


async def test_concurrent_migrations_apply_once(empty_dsn: str) -> None:
    await ensure_database(empty_dsn)
    results = await asyncio.gather(*(migrate(empty_dsn) for _ in range(4)))
    assert sorted(name for result in results for name in result) == LABELS


async def test_an_edited_applied_migration_is_refused_by_name(empty_dsn: str) -> None:
    await ensure_database(empty_dsn)
    await migrate(empty_dsn)
    # As if 0002's file had been edited after it ran: its recorded checksum no longer matches.
    await sql(empty_dsn, "UPDATE sharevault_schema_migrations SET checksum = 'x' WHERE version = 2")
    with pytest.raises(MigrationError, match=LABELS[1]) as refused:
        await migrate(empty_dsn)
    assert LABELS[0] not in str(refused.value)
    states = {s.label: s.state for s in await migration_status(empty_dsn)}
    assert states[LABELS[1]] == "edited"
    assert {states[label] for label in LABELS if label != LABELS[1]} == {"applied"}


async def test_status_reads_pending_applied_and_unknown_without_changing_anything(
    empty_dsn: str,
) -> None:
    await ensure_database(empty_dsn)
    assert {s.state for s in await migration_status(empty_dsn)} == {"pending"}
    conn = await asyncpg.connect(empty_dsn)
    try:
        assert await conn.fetchval("SELECT to_regclass('sharevault_schema_migrations')") is None
    finally:
        await conn.close()
    await migrate(empty_dsn)
    await sql(
        empty_dsn,
        "INSERT INTO sharevault_schema_migrations (version, name, checksum)"
        " VALUES (9999, 'from_a_newer_release', 'y')",
    )
    states = await migration_status(empty_dsn)
    assert [(s.label, s.state) for s in states] == [
        *((label, "applied") for label in LABELS),
        ("9999_from_a_newer_release", "unknown"),
    ]


async def test_the_old_unprefixed_table_is_taken_over(empty_dsn: str) -> None:
    await ensure_database(empty_dsn)
    await migrate(empty_dsn)
    # The shape of the history table before checksums.
    await sql(
        empty_dsn,
        "ALTER TABLE sharevault_schema_migrations DROP COLUMN checksum;"
        "ALTER TABLE sharevault_schema_migrations RENAME TO schema_migrations",
    )
    assert {s.state for s in await migration_status(empty_dsn)} == {"applied"}
    assert await migrate(empty_dsn) == []
    states = await migration_status(empty_dsn)
    assert [(s.label, s.state) for s in states] == [(label, "applied") for label in LABELS]
    conn = await asyncpg.connect(empty_dsn)
    try:
        assert await conn.fetchval("SELECT to_regclass('schema_migrations')") is None
    finally:
        await conn.close()


async def test_migrate_command_status_and_refusal(empty_dsn: str) -> None:
    base = {k: v for k, v in os.environ.items() if not k.startswith("SHAREVAULT_")}
    env = {**base, "SHAREVAULT_DATABASE_URL": empty_dsn}
    code, out, err = await run_cli("migrate", env=env)
    assert code == 0, err
    assert f"applied {len(LABELS)} migration(s)" in err
    code, out, err = await run_cli("migrate", "--status", env=env)
    assert code == 0, err
    assert all(f"{label}" in out for label in LABELS) and "pending" not in out
    await sql(empty_dsn, "UPDATE sharevault_schema_migrations SET checksum = 'x' WHERE version = 1")
    code, out, err = await run_cli("migrate", env=env)
    assert code == 1
    assert LABELS[0] in err and "Traceback" not in err and len(err.strip().splitlines()) == 1
    code, out, err = await run_cli("migrate", "--status", env=env)
    assert code == 1 and "edited" in out
