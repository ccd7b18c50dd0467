"""PostgreSQL access: the only module that imports asyncpg; named queries in sql/queries.sql."""

from __future__ import annotations

import asyncio
import logging
import re
import time
from collections.abc import AsyncIterator, Awaitable, Callable, Iterable, Sequence
from contextlib import asynccontextmanager
from dataclasses import dataclass, field
from importlib import resources
from typing import Any
from urllib.parse import urlsplit, urlunsplit

import asyncpg
from asyncpg import Record
from cachetools import LRUCache

from sharevault.background import running
from sharevault.crypto import Identity, Keyring

log = logging.getLogger(__name__)

COMMIT_CHANNEL = "sharevault_committed"
# PostgreSQL refuses a NOTIFY payload of 8000 bytes or more (server encoding; our ids are ASCII).
NOTIFY_PAYLOAD_LIMIT = 7999
MIGRATION_LOCK = 0x5A4E_5641_554C_5400  # advisory lock key: "SHAREVAULT" in spirit
_NAME = re.compile(r"^-- name: (\w+)\s*$", re.MULTILINE)

# Errors that say "the database is not there right now", as opposed to "this input is wrong".
# asyncpg's InternalClientError too: a connection that dies under a statement can leave its
# protocol "cannot switch to state …"; and with several hosts, TargetServerAttributeNotMatched
# (one of its kind) says no read-write node answers, as during a failover. ConnectionDoesNotExist
# is a PostgresConnectionError.
TRANSIENT_ERRORS: tuple[type[BaseException], ...] = (
    OSError,
    asyncio.TimeoutError,
    asyncpg.exceptions.InterfaceError,
    asyncpg.exceptions.InternalClientError,
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
# Errors that say "this row can never be stored": parked at once instead of retried.
PERMANENT_ERRORS: tuple[type[BaseException], ...] = (
    asyncpg.exceptions.DataError,
    asyncpg.exceptions.IntegrityConstraintViolationError,
)
# Any error the database answered with (the worker retries the rest with delays).
DATABASE_ERRORS: tuple[type[BaseException], ...] = (asyncpg.PostgresError,)


# vacuuming_shares vacuums once dead rows (heap or TOAST) pass VACUUM_MIN_DEAD + VACUUM_SCALE * live
# rows: autovacuum's own rule (its defaults: 50 + 0.2 * live). A vacuum reads the indexes whole, so
# a scale, not a fixed count, keeps its cost per overwritten share flat as the table grows.
VACUUM_MIN_DEAD = 1000
VACUUM_SCALE = 0.2
# Rows applied between two looks at the statistics; and, once writes stop, one more look after
# this many seconds (a backend reports its counts within 10 s of going idle, ~1 s while busy).
VACUUM_LOOK_EVERY = 1000
VACUUM_LOOK_IDLE = 15.0
# Methods known to be held, remembered by method_room (a client never loses a method it holds: the
# pruning keeps the newest pair of each), so a client's next writes under it skip the query.
KNOWN_METHODS = 100_000
# A vacuum is never cut short by the pool's command timeout, but neither does it run forever.
VACUUM_TIMEOUT = 3600.0


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
    # Client shares: the Portal report owed once applied, and the sealed bearer to send it with.
    report_api: str | None = None
    bearer_sealed: bytes | None = field(default=None, repr=False)
    # The HTTP request that produced it (X-Request-Id), carried on to the Portal report.
    request_id: str | None = None


@dataclass(frozen=True, slots=True)
class OutboxRow:
    """A report owed to Portal, locked by the sender that claimed it until it settles."""

    id: int
    message_id: str
    identity: Identity
    report_api: str
    bearer_sealed: bytes | None = field(repr=False)
    attempts: int
    age: float
    request_id: str | None = None


@dataclass(frozen=True, slots=True)
class OutboxOutcome:
    """How an attempt ended: 'pending' (retry after `delay` s), 'sent', 'failed' or 'expired'."""

    id: int
    status: str
    delay: float = 0.0
    http_status: int | None = None
    reason: str | None = None


def share_columns(rows: Sequence[SealedRow]) -> list[Any]:
    """The parameters of `store_batch`'s shares: kind, client_id, backup_method, pair_id (arrays),
    every sealed share in one bytes, their 1-based starts and sizes in it, then key_id, version,
    message_id (arrays). One bytea rather than a bytea[]: asyncpg encodes an array element by
    element, at about 14 µs per 7 KB share on this machine against 4 µs, and PostgreSQL parses
    the array at 4-5 µs per share against 3 µs for the cut (bench figures in the commit)."""
    starts, sizes, at = [], [], 1
    for r in rows:
        starts.append(at)
        sizes.append(len(r.sealed))
        at += len(r.sealed)
    return [
        [r.identity.kind for r in rows],
        [r.identity.client_id for r in rows],
        [r.identity.backup_method for r in rows],
        [r.identity.pair_id for r in rows],
        b"".join(r.sealed for r in rows),
        starts,
        sizes,
        [Keyring.key_id_of(r.sealed) for r in rows],
        [r.version for r in rows],
        [r.message_id for r in rows],
    ]


@dataclass(frozen=True, slots=True)
class StoredShare:
    backup_method: str
    pair_id: str
    sealed: bytes
    version: int
    message_id: str


def _stored(r: Record) -> StoredShare:
    return StoredShare(r["backup_method"], r["pair_id"], r["sealed"], r["version"], r["message_id"])


@dataclass(frozen=True, slots=True)
class SealedBearer:
    """A pending report's bearer as stored (to re-wrap); `identity` is its share's."""

    id: int
    identity: Identity
    sealed: bytes = field(repr=False)


@dataclass(frozen=True, slots=True)
class Bounds:
    """What one client may hold (docs/operations.md, "Budget and bounds")."""

    pairs_per_method: int = 8
    methods_per_client: int = 16

    @property
    def shares_per_kind(self) -> int:
        """The most shares of one kind a client can hold: what a read of them all returns."""
        return self.pairs_per_method * self.methods_per_client


class Store:
    """Typed queries over a pool. A `timeout` bounds a call whole: pool wait, connecting, the
    statement; past it the call raises TimeoutError (one of TRANSIENT_ERRORS)."""

    def __init__(self, pool: asyncpg.Pool, bounds: Bounds | None = None) -> None:
        self.pool = pool
        self.bounds = bounds or Bounds()
        self._known_methods: LRUCache[tuple[str, str, str], bool] = LRUCache(KNOWN_METHODS)
        # Rows applied since vacuuming_shares last looked at the dead rows; it wakes at _look_every.
        self._applied_since_look = 0
        self._look_every = VACUUM_LOOK_EVERY
        self._look_due = asyncio.Event()
        # host:port of the database node the last ping reached (of a multi-host DSN: the primary).
        self.node: str | None = None

    def _wrote(self, rows: int) -> None:
        self._applied_since_look += rows
        if self._applied_since_look >= self._look_every:
            self._look_due.set()

    async def _fetch(self, query: str, *args: Any, timeout: float | None) -> list[Record]:
        if timeout is None:
            return await self.pool.fetch(query, *args)
        # asyncpg's own timeout covers the statement only (and cancels it in the server); the
        # outer one also covers waiting for a pooled connection and opening one.
        async with asyncio.timeout(timeout):
            return await self.pool.fetch(query, *args, timeout=timeout)

    async def ping(self, timeout: float = 2.0) -> None:
        """The database answers; `node` then names the one that did."""
        async with asyncio.timeout(timeout), self.pool.acquire() as conn:
            await conn.fetchval(Q["ping"], timeout=timeout)
            self.node = node_of(conn)

    async def upsert_batch(self, rows: Sequence[SealedRow]) -> set[str]:
        """Store a batch in one statement, wake waiters at commit; return the ids applied."""
        if not rows:
            return set()
        # One statement cannot touch a row twice: keep the newest message per identity. In key
        # order, so that two workers writing overlapping batches lock rows in the same order.
        newest: dict[Identity, SealedRow] = {}
        for row in rows:
            held = newest.get(row.identity)
            if held is None or (row.version, row.message_id) > (held.version, held.message_id):
                newest[row.identity] = row
        chosen = [newest[identity] for identity in sorted(newest, key=_identity_key)]
        owed = [r for r in chosen if r.report_api is not None and r.bearer_sealed is not None]
        result = await self.pool.fetchrow(
            Q["store_batch"],
            *share_columns(chosen),
            [r.message_id for r in owed],
            [r.report_api for r in owed],
            [r.bearer_sealed for r in owed],
            [r.request_id for r in owed],
            # Every message of the batch is settled (applied, or superseded by a newer one).
            notice_payloads(r.message_id for r in rows),
            self.bounds.pairs_per_method,
            self.bounds.methods_per_client,
        )
        if result is None:  # a SELECT without FROM returns one row: never
            raise RuntimeError("store_batch returned no row")
        applied: list[str] = result["applied"]
        self._wrote(len(applied))
        return set(applied)

    async def stored_version(
        self, identity: Identity, *, timeout: float | None = None
    ) -> tuple[int, str] | None:
        rows = await self._fetch(
            Q["stored_version"],
            identity.kind,
            identity.client_id,
            identity.backup_method,
            identity.pair_id,
            timeout=timeout,
        )
        return None if not rows else (rows[0]["version"], rows[0]["message_id"])

    async def client_shares(
        self, kind: str, client_id: str, *, timeout: float | None = None
    ) -> list[StoredShare]:
        """Every share of one kind of the client (at most the bounds allow), newest first."""
        rows = await self._fetch(
            Q["client_shares"], kind, client_id, self.bounds.shares_per_kind, timeout=timeout
        )
        return [_stored(r) for r in rows]

    async def client_share(
        self,
        client_id: str,
        backup_method: str | None,
        pair_id: str | None,
        *,
        unknown: str,
        timeout: float | None = None,
    ) -> StoredShare | None:
        """The client share recovery serves: by pair id, else by method (`unknown` if none),
        else the newest under `unknown` (client_shares.lookup_order, in SQL)."""
        rows = await self._fetch(
            Q["client_share_lookup"],
            client_id,
            pair_id or "",
            backup_method or unknown,
            timeout=timeout,
        )
        return _stored(rows[0]) if rows else None

    async def method_room(
        self, kind: str, client_id: str, backup_method: str, *, timeout: float | None = None
    ) -> bool:
        """Whether the client may store a share under this method (it has it, or room for it)."""
        key = (kind, client_id, backup_method)
        if key in self._known_methods:
            return True
        rows = await self._fetch(
            Q["method_room"],
            kind,
            client_id,
            backup_method,
            self.bounds.methods_per_client,
            timeout=timeout,
        )
        held, room = rows[0]["held"], rows[0]["room"]
        if held:
            self._known_methods[key] = True
        return bool(held or room)

    async def process_outbox(
        self, limit: int, send: Callable[[list[OutboxRow]], Awaitable[list[OutboxOutcome]]]
    ) -> int:
        """Claim due reports, let `send` deliver them while they stay locked, record outcomes."""
        async with self.pool.acquire() as conn, conn.transaction():
            claimed = await conn.fetch(Q["outbox_claim"], limit)
            if not claimed:
                return 0
            rows = [
                OutboxRow(
                    r["id"],
                    r["message_id"],
                    Identity("client", r["client_id"], r["backup_method"], r["pair_id"]),
                    r["report_api"],
                    r["bearer_sealed"],
                    r["attempts"],
                    r["age"],
                    r["request_id"],
                )
                for r in claimed
            ]
            outcomes = await send(rows)
            await conn.executemany(
                Q["outbox_settle"],
                [(o.id, o.status, o.delay, o.http_status, o.reason) for o in outcomes],
            )
        return len(rows)

    # --- key rotation and stats (sharevault/ops) -------------------------------------------------

    async def key_counts(self) -> dict[str, dict[str, int]]:
        """Rows each key id protects: {"shares": {kid: n}, "outbox": {kid: n}} (pending bearers)."""
        shares = await self.pool.fetch(Q["shares_by_key"])
        bearers = await self.pool.fetch(Q["outbox_by_key"])
        return {
            "shares": {r["key_id"]: r["n"] for r in shares},
            "outbox": {r["key_id"] or "": r["n"] for r in bearers},
        }

    async def shares_to_rewrap(
        self, current_key: str, after: Identity | None, limit: int
    ) -> tuple[list[SealedRow], Identity | None]:
        """Of the next `limit` rows in primary-key order after `after`, those under another key,
        and the last identity of the window (None: the table ends here)."""
        start = after or Identity("", "", "", "")
        rows = await self.pool.fetch(
            Q["shares_to_rewrap"],
            current_key,
            start.kind,
            start.client_id,
            start.backup_method,
            start.pair_id,
            limit,
        )
        found = [
            SealedRow(
                Identity(r["kind"], r["client_id"], r["backup_method"], r["pair_id"]),
                r["sealed"],
                r["version"],
                r["message_id"],
            )
            for r in rows
        ]
        last = found[-1].identity if found else None
        return [r for r in found if r.sealed is not None], last

    async def rewrap_shares(self, rows: Sequence[SealedRow]) -> set[str]:
        """Write re-sealed shares whose row is unchanged (same version and message) and free."""
        written = await self.pool.fetch(
            Q["rewrap_shares"],
            [r.identity.kind for r in rows],
            [r.identity.client_id for r in rows],
            [r.identity.backup_method for r in rows],
            [r.identity.pair_id for r in rows],
            [r.version for r in rows],
            [r.message_id for r in rows],
            [r.sealed for r in rows],
            [Keyring.key_id_of(r.sealed) for r in rows],
        )
        self._wrote(len(written))
        return {r["message_id"] for r in written}

    async def bearers_to_rewrap(
        self, current_key: str, after_id: int, limit: int
    ) -> list[SealedBearer]:
        """The next page, by id after `after_id`, of pending bearers under another key."""
        rows = await self.pool.fetch(Q["outbox_to_rewrap"], current_key, after_id, limit)
        return [
            SealedBearer(
                r["id"],
                Identity("client", r["client_id"], r["backup_method"], r["pair_id"]),
                r["bearer_sealed"],
            )
            for r in rows
        ]

    async def rewrap_bearers(self, rows: Sequence[tuple[SealedBearer, bytes]]) -> set[int]:
        """Write re-sealed bearers whose row still holds the bearer read and is not claimed."""
        written = await self.pool.fetch(
            Q["rewrap_outbox"],
            [old.id for old, _ in rows],
            [old.sealed for old, _ in rows],
            [new for _, new in rows],
        )
        return {r["id"] for r in written}

    async def share_counts(self) -> list[tuple[str, str, int]]:
        """(kind, backup method, shares) for every pair stored."""
        rows = await self.pool.fetch(Q["shares_by_method"])
        return [(r["kind"], r["backup_method"], r["n"]) for r in rows]

    async def outbox_summary(self) -> dict[str, tuple[int, float]]:
        """Status → (reports, age in seconds of the oldest)."""
        rows = await self.pool.fetch(Q["outbox_summary"])
        return {r["status"]: (r["n"], r["oldest"]) for r in rows}

    async def prune_outbox(self, older_than: float, limit: int = 1000) -> int:
        """Delete up to `limit` settled reports finished more than `older_than` seconds ago."""
        status = await self.pool.execute(Q["outbox_prune"], older_than, limit)
        return int(status.rsplit(" ", 1)[-1])

    # --- vacuum where autovacuum is off (vacuuming_shares) ---------------------------------------

    async def dead_rows(self) -> DeadRows:
        """Live and dead rows of `shares` and its TOAST, and whether autovacuum looks after them."""
        r = await self.pool.fetchrow(Q["shares_dead_rows"])
        if r is None:  # the migrations create the table: never
            raise RuntimeError("table shares not found")
        return DeadRows(
            r["autovacuum"], r["heap_live"], r["heap_dead"], r["toast_live"], r["toast_dead"]
        )

    async def vacuum_if_due(
        self, *, min_dead: int = VACUUM_MIN_DEAD, scale: float = VACUUM_SCALE
    ) -> DeadRows | None:
        """VACUUM `shares` if autovacuum is off for it and its dead rows passed `min_dead` +
        `scale` * live rows (heap or TOAST); the counts that called for it, or None."""
        dead = await self.dead_rows()
        if not dead.due(min_dead, scale):
            return None
        started = time.monotonic()
        await self.pool.execute(Q["vacuum_shares"], timeout=VACUUM_TIMEOUT)
        log.info(
            "vacuumed shares in %.1fs (autovacuum is off; dead rows: %d, TOAST chunks: %d)",
            time.monotonic() - started,
            dead.heap_dead,
            dead.toast_dead,
        )
        return dead


@dataclass(frozen=True, slots=True)
class DeadRows:
    """PostgreSQL's statistics of `shares` (heap) and its TOAST table (the sealed shares)."""

    autovacuum: bool  # autovacuum is on, counting, and not disabled for either table
    heap_live: int
    heap_dead: int
    toast_live: int
    toast_dead: int

    def due(self, min_dead: int = VACUUM_MIN_DEAD, scale: float = VACUUM_SCALE) -> bool:
        """Nobody else will vacuum, and the heap or the TOAST holds too many dead rows."""
        if self.autovacuum:
            return False
        return (
            self.heap_dead > min_dead + scale * self.heap_live
            or self.toast_dead > min_dead + scale * self.toast_live
        )


@asynccontextmanager
async def vacuuming_shares(
    store: Store,
    *,
    enabled: bool = True,
    look_every: int = VACUUM_LOOK_EVERY,
    look_idle: float = VACUUM_LOOK_IDLE,
) -> AsyncIterator[None]:
    """While the block runs, vacuum `shares` when autovacuum is off for it and dead rows pile up,
    looking at the statistics after every `look_every` rows this store applied."""
    if not enabled:
        yield
        return
    store._look_every = look_every
    async with running(_vacuum_loop(store, look_idle), "shares-vacuum"):
        yield


async def _vacuum_loop(store: Store, look_idle: float) -> None:
    stale = False  # the last look may have come before the statistics counted the last writes
    while True:
        # asyncio.timeout, not wait_for: on 3.11 wait_for loses a cancel that races the event.
        try:
            async with asyncio.timeout(look_idle):
                await store._look_due.wait()
        except TimeoutError:
            if not stale and store._applied_since_look == 0:
                continue
        wrote = store._applied_since_look > 0
        store._look_due.clear()
        store._applied_since_look = 0
        try:
            await store.vacuum_if_due()
        except Exception as exc:  # maintenance never takes the worker down; the next look retries
            log.warning("shares vacuum failed (%s); will look again", type(exc).__name__)
        stale = wrote


def node_of(conn: object) -> str | None:
    """host:port (or the socket path) of the server a connection, or pooled one, is on."""
    # asyncpg keeps the address it connected to (of a host list, the one it chose) in `_addr`
    # and offers no public accessor; a pool's proxy passes the attribute through.
    addr = getattr(conn, "_addr", None)
    if isinstance(addr, tuple) and len(addr) == 2:
        return f"{addr[0]}:{addr[1]}"
    return addr if isinstance(addr, str) else None


def _identity_key(identity: Identity) -> tuple[str, str, str, str]:
    return (identity.kind, identity.client_id, identity.backup_method, identity.pair_id)


def notice_payloads(message_ids: Iterable[str], limit: int = NOTIFY_PAYLOAD_LIMIT) -> list[str]:
    """The ids joined by commas into as few payloads as fit, none of more than `limit` bytes."""
    payloads: list[str] = []
    current: list[str] = []
    size = 0
    for message_id in message_ids:
        length = len(message_id.encode())
        if current and size + 1 + length > limit:
            payloads.append(",".join(current))
            current, size = [], 0
        size += length + (1 if current else 0)
        current.append(message_id)
    if current:
        payloads.append(",".join(current))
    return payloads


@asynccontextmanager
async def open_store(
    dsn: str,
    *,
    size: int = 8,
    min_size: int = 1,
    bounds: Bounds | None = None,
    connect_timeout: float = 60.0,
    command_timeout: float = 30.0,
    statement_timeout: float | None = None,
) -> AsyncIterator[Store]:
    """A pool for the lifetime of the block (min_size=0: start even while the database is down).
    `statement_timeout`: the server also gives up on any statement after that many seconds (the
    gateway's reads: nothing it asks may outlive its request, not even in the server)."""
    server_settings = {}
    if statement_timeout is not None:
        server_settings["statement_timeout"] = str(max(1, round(statement_timeout * 1000)))
    pool = await asyncpg.create_pool(
        dsn,
        min_size=min(min_size, size),
        max_size=size,
        command_timeout=command_timeout,
        timeout=connect_timeout,
        server_settings=server_settings,
        reset=_release_as_is,
    )
    try:
        yield Store(pool, bounds)
    finally:
        await pool.close()


async def _release_as_is(_conn: asyncpg.Connection[Record]) -> None:
    """Release a pool connection without asyncpg's reset query (advisory unlock, CLOSE ALL,
    UNLISTEN *, RESET ALL): one round trip per release, as many as the write path's own work."""
    # Safe because no pool connection ever carries session state: this module is the only user
    # of asyncpg and runs no SET, LISTEN, advisory lock, cursor or temporary table on the pool (the
    # commit LISTEN and the migration lock have connections of their own). asyncpg itself still
    # rolls back a transaction left open and drops listener callbacks before calling this.


class CommitListener:
    """A dedicated connection LISTENing for commit notices; reconnects by itself."""

    def __init__(
        self,
        dsn: str,
        on_ids: Callable[[list[str]], None],
        on_reconnect: Callable[[], Awaitable[None]],
        *,
        connect_timeout: float = 5.0,
    ) -> None:
        self._dsn = dsn
        self._connect_timeout = connect_timeout
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
                conn = await self._connect()
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

    async def _connect(self) -> asyncpg.Connection[Record]:
        conn = None
        try:
            # asyncio.timeout too: asyncpg's covers the connect, not the LISTEN after it.
            async with asyncio.timeout(self._connect_timeout):
                conn = await asyncpg.connect(self._dsn, timeout=self._connect_timeout)
                await conn.add_listener(COMMIT_CHANNEL, self._notified)
        except BaseException:
            if conn is not None:
                conn.terminate()
            raise
        return conn

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
