"""PostgreSQL access: the only module that imports asyncpg; named queries in sql/queries.sql."""

from __future__ import annotations

import asyncio
import logging
import re
from collections.abc import AsyncIterator, Awaitable, Callable, Iterable, Sequence
from contextlib import asynccontextmanager
from dataclasses import dataclass
from importlib import resources
from urllib.parse import urlsplit, urlunsplit

import asyncpg

from sharevault.crypto import Identity, Keyring

log = logging.getLogger(__name__)

COMMIT_CHANNEL = "sharevault_committed"
MIGRATION_LOCK = 0x5A4E_5641_554C_5400  # advisory lock key: "SHAREVAULT" in spirit
_NAME = re.compile(r"^-- name: (\w+)\s*$", re.MULTILINE)

# Errors that say "the database is not there right now", as opposed to "this input is wrong".
TRANSIENT_ERRORS: tuple[type[BaseException], ...] = (
    OSError,
    asyncio.TimeoutError,
    asyncpg.exceptions.InterfaceError,
    asyncpg.exceptions.PostgresConnectionError,
    asyncpg.exceptions.CannotConnectNowError,
    asyncpg.exceptions.TooManyConnectionsError,
    asyncpg.exceptions.SerializationError,
    asyncpg.exceptions.DeadlockDetectedError,
    asyncpg.exceptions.LockNotAvailableError,
    asyncpg.exceptions.AdminShutdownError,
    asyncpg.exceptions.CrashShutdownError,
    asyncpg.exceptions.QueryCanceledError,
    asyncpg.exceptions.ReadOnlySQLTransactionError,
    asyncpg.exceptions.InsufficientResourcesError,
)


def load_queries() -> dict[str, str]:
    """Named queries from sql/queries.sql, parsed once at import."""
    text = resources.files("sharevault").joinpath("sql/queries.sql").read_text()
    chunks = _NAME.split(text)[1:]
    return {name: body.strip() for name, body in zip(chunks[::2], chunks[1::2], strict=True)}


Q = load_queries()


@dataclass(frozen=True, slots=True)
class SealedRow:
    """One share to store, still sealed."""

    identity: Identity
    sealed: bytes
    version: int
    message_id: str


@dataclass(frozen=True, slots=True)
class StoredShare:
    backup_method: str
    pair_id: str
    sealed: bytes
    version: int
    message_id: str


class Store:
    """Typed queries over a pool."""

    def __init__(self, pool: asyncpg.Pool) -> None:
        self.pool = pool

    async def ping(self) -> None:
        await self.pool.fetchval(Q["ping"], timeout=2)

    async def upsert_batch(self, rows: Sequence[SealedRow]) -> set[str]:
        """Store a batch in one transaction, wake waiters at commit; return the ids applied."""
        # One statement cannot touch a row twice: keep the newest message per identity.
        newest: dict[Identity, SealedRow] = {}
        for row in rows:
            held = newest.get(row.identity)
            if held is None or (row.version, row.message_id) > (held.version, held.message_id):
                newest[row.identity] = row
        chosen = list(newest.values())
        async with self.pool.acquire() as conn, conn.transaction():
            applied = await conn.fetch(
                Q["upsert_shares"],
                [r.identity.kind for r in chosen],
                [r.identity.client_id for r in chosen],
                [r.identity.backup_method for r in chosen],
                [r.identity.pair_id for r in chosen],
                [r.sealed for r in chosen],
                [Keyring.key_id_of(r.sealed) for r in chosen],
                [r.version for r in chosen],
                [r.message_id for r in chosen],
            )
            # Every message of the batch is settled (applied, or superseded by a newer one).
            for chunk in _chunks([r.message_id for r in rows], 200):
                await conn.execute(Q["notify_committed"], ",".join(chunk))
        return {r["message_id"] for r in applied}

    async def stored_version(self, identity: Identity) -> tuple[int, str] | None:
        row = await self.pool.fetchrow(
            Q["stored_version"],
            identity.kind,
            identity.client_id,
            identity.backup_method,
            identity.pair_id,
        )
        return None if row is None else (row["version"], row["message_id"])

    async def client_shares(self, kind: str, client_id: str) -> list[StoredShare]:
        rows = await self.pool.fetch(Q["client_shares"], kind, client_id)
        return [
            StoredShare(
                r["backup_method"], r["pair_id"], r["sealed"], r["version"], r["message_id"]
            )
            for r in rows
        ]


def _chunks(items: list[str], size: int) -> Iterable[list[str]]:
    for start in range(0, len(items), size):
        yield items[start : start + size]


@asynccontextmanager
async def open_store(dsn: str, *, size: int = 8, min_size: int = 1) -> AsyncIterator[Store]:
    """A pool for the lifetime of the block (min_size=0: start even while the database is down)."""
    pool = await asyncpg.create_pool(
        dsn, min_size=min(min_size, size), max_size=size, command_timeout=30
    )
    try:
        yield Store(pool)
    finally:
        await pool.close()


class CommitListener:
    """A dedicated connection LISTENing for commit notices; reconnects by itself."""

    def __init__(
        self,
        dsn: str,
        on_ids: Callable[[list[str]], None],
        on_reconnect: Callable[[], Awaitable[None]],
    ) -> None:
        self._dsn = dsn
        self._on_ids = on_ids
        self._on_reconnect = on_reconnect
        self._task: asyncio.Task[None] | None = None
        self.connected = asyncio.Event()

    def _notified(self, _conn: object, _pid: int, _channel: str, payload: object) -> None:
        self._on_ids(str(payload).split(","))

    async def _run(self) -> None:
        delay = 0.2
        while True:
            try:
                conn = await asyncpg.connect(self._dsn, timeout=5)
            except TRANSIENT_ERRORS as exc:
                log.warning(
                    "commit listener: database unreachable (%s), retrying", type(exc).__name__
                )
                await asyncio.sleep(delay)
                delay = min(delay * 2, 5.0)
                continue
            closed = asyncio.Event()
            conn.add_termination_listener(_setter(closed))
            try:
                await conn.add_listener(COMMIT_CHANNEL, self._notified)
                self.connected.set()
                delay = 0.2
                # Notices sent while we were away are lost: let waiters re-check the table.
                await self._on_reconnect()
                await closed.wait()
                log.warning("commit listener: connection lost, reconnecting")
            except TRANSIENT_ERRORS as exc:
                log.warning("commit listener: %s, reconnecting", type(exc).__name__)
            finally:
                self.connected.clear()
                conn.terminate()

    async def __aenter__(self) -> CommitListener:
        self._task = asyncio.create_task(self._run(), name="commit-listener")
        return self

    async def __aexit__(self, *exc: object) -> None:
        if self._task is not None:
            self._task.cancel()
            await asyncio.gather(self._task, return_exceptions=True)


def _setter(event: asyncio.Event) -> Callable[[object], None]:
    return lambda _conn: event.set()


# --- migrations -------------------------------------------------------------------------------


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
