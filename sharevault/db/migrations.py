"""Schema migrations: the SQL files shipped in the package, applied in order under a lock."""

from __future__ import annotations

import re
from importlib import resources
from urllib.parse import urlsplit, urlunsplit

import asyncpg

MIGRATION_LOCK = 0x5A4E_5641_554C_5400  # advisory lock key: "SHAREVAULT" in spirit


def migration_files() -> list[tuple[int, str, str]]:
    """(number, name, sql) of every migration shipped in the package, in order."""
    found = []
    for entry in resources.files("sharevault").joinpath("sql/migrations").iterdir():
        match = re.match(r"^(\d{4})_(\w+)\.sql$", entry.name)
        if match:
            found.append((int(match[1]), match[2], entry.read_text()))
    return sorted(found)


async def ensure_database(dsn: str) -> bool:
    """Create the target database if it does not exist; True when it was created."""
    parts = urlsplit(dsn)
    name = parts.path.lstrip("/")
    if not name:
        return False
    try:
        conn = await asyncpg.connect(dsn, timeout=10)
    except asyncpg.exceptions.InvalidCatalogNameError:
        pass
    else:
        await conn.close()
        return False
    admin = await asyncpg.connect(urlunsplit(parts._replace(path="/postgres")), timeout=10)
    try:
        await admin.execute(f'CREATE DATABASE "{name.replace(chr(34), "")}"')
    except asyncpg.exceptions.DuplicateDatabaseError:
        return False
    finally:
        await admin.close()
    return True


async def migrate(dsn: str) -> list[str]:
    """Apply pending migrations under an advisory lock; safe to run twice or concurrently."""
    conn = await asyncpg.connect(dsn, timeout=10)
    applied: list[str] = []
    try:
        await conn.execute("SELECT pg_advisory_lock($1)", MIGRATION_LOCK)
        try:
            await conn.execute(
                "CREATE TABLE IF NOT EXISTS schema_migrations ("
                " version integer PRIMARY KEY, name text NOT NULL,"
                " applied_at timestamptz NOT NULL DEFAULT now())"
            )
            done = {r["version"] for r in await conn.fetch("SELECT version FROM schema_migrations")}
            for number, name, sql in migration_files():
                if number in done:
                    continue
                async with conn.transaction():
                    await conn.execute(sql)
                    await conn.execute(
                        "INSERT INTO schema_migrations (version, name) VALUES ($1, $2)",
                        number,
                        name,
                    )
                applied.append(f"{number:04d}_{name}")
        finally:
            await conn.execute("SELECT pg_advisory_unlock($1)", MIGRATION_LOCK)
    finally:
        await conn.close()
    return applied
