"""Schema migrations: the SQL files shipped in the package, applied in order under a lock, each
recorded with the checksum of its text so that an applied migration edited afterwards is refused."""

from __future__ import annotations

import hashlib
import re
from dataclasses import dataclass
from importlib import resources
from urllib.parse import urlsplit, urlunsplit

import asyncpg

MIGRATION_LOCK = 0x5A4E_5641_554C_5400  # advisory lock key: "SHAREVAULT" in spirit
TABLE = "sharevault_schema_migrations"
LEGACY_TABLE = "schema_migrations"  # before checksums: renamed and filled in on the first run


class MigrationError(Exception):
    """The database's migration history does not match the files shipped (says which)."""


@dataclass(frozen=True)
class Migration:
    """One numbered SQL file of sharevault/sql/migrations."""

    number: int
    name: str
    sql: str

    @property
    def label(self) -> str:
        return f"{self.number:04d}_{self.name}"

    @property
    def checksum(self) -> str:
        return hashlib.sha256(self.sql.encode()).hexdigest()


@dataclass(frozen=True)
class MigrationState:
    """One line of `sharevault migrate --status`."""

    label: str
    state: str  # applied | pending | edited (text differs from when applied) | unknown (no file)
    applied_at: str | None


def migration_files() -> list[Migration]:
    """Every migration shipped in the package, in order."""
    found = []
    for entry in resources.files("sharevault").joinpath("sql/migrations").iterdir():
        match = re.match(r"^(\d{4})_(\w+)\.sql$", entry.name)
        if match:
            found.append(Migration(int(match[1]), match[2], entry.read_text()))
    return sorted(found, key=lambda m: m.number)


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


async def _history(conn: asyncpg.Connection) -> dict[int, asyncpg.Record]:
    """version -> (name, checksum, applied_at) of the applied migrations; {} before the first."""
    if await conn.fetchval("SELECT to_regclass($1)", TABLE) is None:
        return {}
    rows = await conn.fetch(f"SELECT version, name, checksum, applied_at FROM {TABLE}")  # noqa: S608
    return {r["version"]: r for r in rows}


async def _prepare(conn: asyncpg.Connection, files: list[Migration]) -> None:
    """Create the history table, or take over the unprefixed one of older releases."""
    if await conn.fetchval("SELECT to_regclass($1)", TABLE) is not None:
        return
    async with conn.transaction():
        if await conn.fetchval("SELECT to_regclass($1)", LEGACY_TABLE) is None:
            await conn.execute(
                f"CREATE TABLE {TABLE} (version integer PRIMARY KEY, name text NOT NULL,"
                " checksum text NOT NULL, applied_at timestamptz NOT NULL DEFAULT now())"
            )
            return
        # No checksums were kept: the files of this release are taken as what was applied.
        await conn.execute(f"ALTER TABLE {LEGACY_TABLE} RENAME TO {TABLE}")
        await conn.execute(f"ALTER TABLE {TABLE} ADD COLUMN checksum text")
        await conn.executemany(
            f"UPDATE {TABLE} SET checksum = $2 WHERE version = $1",  # noqa: S608
            [(m.number, m.checksum) for m in files],
        )
        await conn.execute(f"UPDATE {TABLE} SET checksum = '' WHERE checksum IS NULL")  # noqa: S608
        await conn.execute(f"ALTER TABLE {TABLE} ALTER COLUMN checksum SET NOT NULL")


def _verify(files: list[Migration], done: dict[int, asyncpg.Record]) -> None:
    """Refuse an applied migration whose file changed since, naming it."""
    edited = [
        m.label for m in files if m.number in done and done[m.number]["checksum"] != m.checksum
    ]
    if edited:
        raise MigrationError(
            f"applied migration(s) edited since they ran: {', '.join(edited)} (the file's checksum "
            "differs from the one recorded); restore the file and put changes in a new migration"
        )


async def migrate(dsn: str) -> list[str]:
    """Verify the applied migrations, then apply pending ones under an advisory lock; safe to
    run twice or concurrently."""
    files = migration_files()
    conn = await asyncpg.connect(dsn, timeout=10)
    applied: list[str] = []
    try:
        await conn.execute("SELECT pg_advisory_lock($1)", MIGRATION_LOCK)
        try:
            await _prepare(conn, files)
            done = await _history(conn)
            _verify(files, done)
            for migration in files:
                if migration.number in done:
                    continue
                async with conn.transaction():
                    await conn.execute(migration.sql)
                    await conn.execute(
                        f"INSERT INTO {TABLE} (version, name, checksum) VALUES ($1, $2, $3)",  # noqa: S608
                        migration.number,
                        migration.name,
                        migration.checksum,
                    )
                applied.append(migration.label)
        finally:
            await conn.execute("SELECT pg_advisory_unlock($1)", MIGRATION_LOCK)
    finally:
        await conn.close()
    return applied


async def migration_status(dsn: str) -> list[MigrationState]:
    """Each migration shipped or recorded: applied, pending, edited or unknown. Changes nothing."""
    files = migration_files()
    conn = await asyncpg.connect(dsn, timeout=10)
    try:
        done = await _history(conn)
        if not done and await conn.fetchval("SELECT to_regclass($1)", LEGACY_TABLE) is not None:
            rows = await conn.fetch(f"SELECT version, name, applied_at FROM {LEGACY_TABLE}")  # noqa: S608
            done = {r["version"]: r for r in rows}
    finally:
        await conn.close()
    states = []
    for m in files:
        row = done.get(m.number)
        if row is None:
            states.append(MigrationState(m.label, "pending", None))
            continue
        checksum = row.get("checksum", m.checksum)
        state = "applied" if checksum == m.checksum else "edited"
        states.append(MigrationState(m.label, state, row["applied_at"].isoformat()))
    known = {m.number for m in files}
    for number, row in sorted(done.items()):
        if number not in known:
            label = f"{number:04d}_{row['name']}"
            states.append(MigrationState(label, "unknown", row["applied_at"].isoformat()))
    return states
