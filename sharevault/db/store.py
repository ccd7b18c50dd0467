"""Typed queries over a pool (named queries in sql/queries.sql)."""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import AsyncIterator, Callable, Sequence
from contextlib import asynccontextmanager
from typing import Any

import asyncpg
from asyncpg import Record

from sharevault.crypto import Identity, Keyring
from sharevault.db.listener import notice_payloads, refusal_payloads
from sharevault.db.nodes import node_of
from sharevault.db.queries import Q
from sharevault.db.rows import (
    Bounds,
    SealedBearer,
    SealedRow,
    StoredShare,
    _identity_key,
    _stored,
    share_columns,
)
from sharevault.db.vacuum import (
    VACUUM_MIN_DEAD,
    VACUUM_SCALE,
    VACUUM_TIMEOUT,
    DeadRows,
    WriteCount,
)

log = logging.getLogger(__name__)


class Store:
    """Typed queries over a pool. A `timeout` bounds a call whole: pool wait, connecting, the
    statement; past it the call raises TimeoutError (one of TRANSIENT_ERRORS)."""

    def __init__(self, pool: asyncpg.Pool, bounds: Bounds | None = None) -> None:
        self.pool = pool
        self.bounds = bounds or Bounds()
        # Rows this store applied, counted for vacuuming_shares.
        self.writes = WriteCount()
        # host:port of the database node the last ping reached (of a multi-host DSN: the primary).
        self.node: str | None = None

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

    async def clock_reading(
        self, local_ns: Callable[[], int], timeout: float
    ) -> tuple[int, int, int]:
        """Local ns just before, PostgreSQL's clock_timestamp() in µs, local ns just after."""
        async with asyncio.timeout(timeout), self.pool.acquire() as conn:
            before = local_ns()
            micros: int = await conn.fetchval(Q["clock"], timeout=timeout)
            return before, micros, local_ns()

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
        self.writes.add(len(applied))
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

    async def notify_refused(self, reason: str, message_ids: Sequence[str]) -> None:
        """Tell the gateways waiting for these messages that the database refused them."""
        await self.pool.execute(Q["notify"], refusal_payloads(reason, message_ids))

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
        self.writes.add(len(written))
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
                r["message_id"],
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
