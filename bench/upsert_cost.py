"""PostgreSQL CPU and rows/s of the worker's write (Store.upsert_batch): before and after.

Each variant gets a scratch database of its own (svbench_upsert_<pid>_<variant>, migrated with
sharevault's own migrate, dropped at the end) and the same workload: N sealed rows of ~8 KB of
random bytes in batches of B, one writer as in a worker, a mix of new identities and overwrites
(some of them client shares that owe Portal a report). PostgreSQL CPU is utime + stime from /proc
of every process of the cluster, and of this run's own backends plus the cluster's helpers (WAL
writer, checkpointer, ...), sampled before and after (bench/procstat.py).

    .venv/bin/python -m bench.upsert_cost                      # old, new, new + vacuum, raw, naive
    .venv/bin/python -m bench.upsert_cost --variants old,new --overwrite 0.9

Variants:
  old           the write path before this change: pool acquire, BEGIN, upsert, outbox insert,
                pg_notify per 200 ids, COMMIT, asyncpg's reset query on release (text kept below)
  new           sharevault.db.Store.upsert_batch as shipped: one statement, no reset query
  new+vacuum    the same with sharevault.db.vacuuming_shares running (as the worker does)
  raw           the bare batched unnest upsert on one connection (bench baseline d): the floor
  naive         one row per statement (autocommit) through a pool: the "naive" design
"""

from __future__ import annotations

import argparse
import asyncio
import os
import random
import time
from collections.abc import Awaitable, Callable, Iterator, Sequence
from dataclasses import dataclass
from typing import Any

import asyncpg

from bench.baselines.rawsql import UPSERT_BATCH, Row
from bench.procstat import cluster_cpu, own_backends, postmaster_pid, read_stat
from sharevault.crypto import Identity, Keyring
from sharevault.db import SealedRow, migrate, open_store, vacuuming_shares

PG_ADMIN = os.environ.get("BENCH_PG", "postgresql://postgres@127.0.0.1:5432/postgres")
VARIANTS = ("old", "new", "new+vacuum", "raw", "naive")

# --- the write path before this change, for the comparison only ---------------------------------

OLD_UPSERT = UPSERT_BATCH + "RETURNING message_id\n"
OLD_NOTIFY = "SELECT pg_notify('sharevault_committed', $1)"
OLD_OUTBOX = """
INSERT INTO outbox (message_id, client_id, backup_method, pair_id, report_api, bearer_sealed,
                    request_id)
SELECT * FROM unnest($1::text[], $2::text[], $3::text[], $4::text[], $5::text[], $6::bytea[],
                     $7::text[])
ON CONFLICT (message_id) DO NOTHING
"""
NAIVE_UPSERT = """
INSERT INTO shares AS s
    (kind, client_id, backup_method, pair_id, sealed, key_id, version, message_id)
VALUES ($1, $2, $3, $4, $5, $6, $7, $8)
ON CONFLICT (kind, client_id, backup_method, pair_id) DO UPDATE
SET sealed = excluded.sealed, key_id = excluded.key_id, version = excluded.version,
    message_id = excluded.message_id, updated_at = now()
WHERE (excluded.version, excluded.message_id) > (s.version, s.message_id)
"""


def array_columns(rows: Sequence[SealedRow]) -> list[list[Any]]:
    """The one-array-per-column parameters of `UPSERT_BATCH` (the raw baseline's statement, and
    the old write path's), sealed shares as a bytea[]."""
    raw: list[Row] = [
        (
            *(r.identity.kind, r.identity.client_id, r.identity.backup_method, r.identity.pair_id),
            *(r.sealed, Keyring.key_id_of(r.sealed), r.version, r.message_id),
        )
        for r in rows
    ]
    return [[row[i] for row in raw] for i in range(8)]


async def old_upsert_batch(pool: asyncpg.Pool, rows: Sequence[SealedRow]) -> set[str]:
    """Store.upsert_batch as it was: five to six round trips per batch."""
    newest: dict[Identity, SealedRow] = {}
    for row in rows:
        held = newest.get(row.identity)
        if held is None or (row.version, row.message_id) > (held.version, held.message_id):
            newest[row.identity] = row
    chosen = list(newest.values())
    async with pool.acquire() as conn, conn.transaction():
        applied = await conn.fetch(OLD_UPSERT, *array_columns(chosen))
        applied_ids = {r["message_id"] for r in applied}
        owed = [
            r
            for r in chosen
            if r.message_id in applied_ids and r.report_api and r.bearer_sealed is not None
        ]
        if owed:
            await conn.execute(
                OLD_OUTBOX,
                [r.message_id for r in owed],
                [r.identity.client_id for r in owed],
                [r.identity.backup_method for r in owed],
                [r.identity.pair_id for r in owed],
                [r.report_api for r in owed],
                [r.bearer_sealed for r in owed],
                [r.request_id for r in owed],
            )
        ids = [r.message_id for r in rows]
        for start in range(0, len(ids), 200):
            await conn.execute(OLD_NOTIFY, ",".join(ids[start : start + 200]))
    return applied_ids


# --- workload ------------------------------------------------------------------------------------


def workload(rows: int, batch: int, overwrite: float, clients: float) -> Iterator[list[SealedRow]]:
    """The same batches for every variant: seeded, ~8 KB of random bytes per sealed share."""
    rng = random.Random(6)
    blobs = [b"\x02k1" + rng.randbytes(8 * 1024 + 28) for _ in range(512)]  # kid, nonce+tag
    identities: list[Identity] = []
    current: list[SealedRow] = []
    for n in range(rows):
        if identities and rng.random() < overwrite:
            identity = identities[rng.randrange(len(identities))]
        else:
            kind = "client" if rng.random() < clients else "custodian"
            identity = Identity(kind, f"c{len(identities):08d}", "GDRIVE", f"p{len(identities)}")
            identities.append(identity)
        owes = identity.kind == "client"
        current.append(
            SealedRow(
                identity,
                blobs[n % len(blobs)],
                n + 1,
                f"{n:032x}",
                report_api="v3" if owes else None,
                bearer_sealed=b"\x02k1" + rng.randbytes(60) if owes else None,
                request_id=f"r{n}" if owes else None,
            )
        )
        if len(current) == batch:
            yield current
            current = []
    if current:
        yield current


# --- measuring -----------------------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class Result:
    variant: str
    batch: int
    rows: int
    seconds: float
    pg_cluster_s: float
    pg_own_s: float
    pg_backends_s: float
    live: int
    dead: int
    toast_dead: int
    bytes_on_disk: int
    vacuums: int

    def line(self) -> str:
        per_live = self.bytes_on_disk / max(self.live, 1)
        cluster, own = 1000 * self.pg_cluster_s / self.rows, 1000 * self.pg_own_s / self.rows
        backends = 1000 * self.pg_backends_s / self.rows
        return (
            f"| {self.variant} | {self.batch} | {self.rows:,} | {self.rows / self.seconds:,.0f} "
            f"| {cluster:.4f} | {own:.4f} | {backends:.4f} "
            f"| {self.live:,} | {self.dead:,} / {self.toast_dead:,} "
            f"| {self.bytes_on_disk / 1e6:,.1f} | {per_live:,.0f} | {self.vacuums} |"
        )


HEADER = (
    "| variant | batch | rows | rows/s | PG CPU ms/row: cluster | own backends + helpers "
    "| own backends | live shares | dead rows heap / TOAST | MB on disk | bytes per live share "
    "| vacuums |\n"
    "|---|---|---|---|---|---|---|---|---|---|---|---|"
)


class PgCpu:
    """CPU seconds of the whole cluster, of one database's backends, and of the shared helpers."""

    def __init__(self, postmaster: int, database: str) -> None:
        self.postmaster = postmaster
        self.database = database
        self.base: dict[int, float] = {}
        self.cluster0 = 0.0

    def _sample(self) -> tuple[dict[int, float], set[int]]:
        """CPU of our backends and the helpers by pid, and which pids are helpers."""
        helpers = set(own_backends(self.postmaster, set()))
        found = {}
        for pid in own_backends(self.postmaster, {self.database}):
            st = read_stat(pid)
            if st is not None:
                found[pid] = st.cpu
        return found, helpers

    def start(self) -> None:
        self.base, _ = self._sample()
        self.cluster0 = cluster_cpu(self.postmaster)

    def stop(self) -> tuple[float, float, float]:
        """(cluster, backends + helpers, backends) seconds since start; a backend born since
        counts whole, as in the bench."""
        now, helpers = self._sample()
        spent = {pid: cpu - self.base.get(pid, 0.0) for pid, cpu in now.items()}
        backends = sum(cpu for pid, cpu in spent.items() if pid not in helpers)
        return cluster_cpu(self.postmaster) - self.cluster0, sum(spent.values()), backends


Writer = Callable[[list[SealedRow]], Awaitable[object]]


async def run_variant(variant: str, args: argparse.Namespace, postmaster: int) -> Result:
    name = f"svbench_upsert_{os.getpid()}_{variant.replace('+', '_')}"
    dsn = PG_ADMIN.rsplit("/", 1)[0] + "/" + name
    admin = await asyncpg.connect(PG_ADMIN)
    try:
        await admin.execute(f"DROP DATABASE IF EXISTS {name} WITH (FORCE)")
        await admin.execute(f"CREATE DATABASE {name}")
        await migrate(dsn)
        batches = list(workload(args.rows, args.batch, args.overwrite, args.clients))
        if variant == "naive":
            batches = batches[: max(1, args.naive_rows // args.batch)]
        cpu = PgCpu(postmaster, name)
        seconds, (cluster, own, backends) = await _write(variant, dsn, batches, cpu)
        db = await asyncpg.connect(dsn)
        try:
            await db.execute("SELECT pg_stat_force_next_flush()")
            await asyncio.sleep(0.2)  # backends that exited report on their way out
            stats = await db.fetchrow(
                "SELECT (SELECT count(*) FROM shares) AS live,"
                " pg_stat_get_dead_tuples(c.oid) AS dead,"
                " pg_stat_get_dead_tuples(c.reltoastrelid) AS toast_dead,"
                " pg_total_relation_size(c.oid) AS size,"
                " pg_stat_get_vacuum_count(c.oid) AS vacuums"
                " FROM pg_class c WHERE c.oid = 'shares'::regclass"
            )
        finally:
            await db.close()
        assert stats is not None
        return Result(
            variant,
            args.batch,
            sum(len(b) for b in batches),
            seconds,
            cluster,
            own,
            backends,
            stats["live"],
            stats["dead"],
            stats["toast_dead"],
            stats["size"],
            stats["vacuums"],
        )
    finally:
        if not args.keep:
            await admin.execute(f"DROP DATABASE IF EXISTS {name} WITH (FORCE)")
        await admin.close()


async def _write(
    variant: str, dsn: str, batches: list[list[SealedRow]], cpu: PgCpu
) -> tuple[float, tuple[float, float, float]]:
    """Write every batch with one writer: seconds, and PostgreSQL CPU seconds (PgCpu.stop)."""
    if variant in ("new", "new+vacuum"):
        async with open_store(dsn, size=3) as store:
            if variant == "new+vacuum":
                async with vacuuming_shares(store):
                    return await _timed(store.upsert_batch, batches, cpu)
            return await _timed(store.upsert_batch, batches, cpu)
    if variant == "old":
        pool = await asyncpg.create_pool(dsn, min_size=1, max_size=3)  # asyncpg's default reset
        try:
            return await _timed(lambda rows: old_upsert_batch(pool, rows), batches, cpu)
        finally:
            await pool.close()
    if variant == "raw":
        conn = await asyncpg.connect(dsn)
        try:
            return await _timed(lambda rows: _raw(conn, rows), batches, cpu)
        finally:
            await conn.close()
    pool = await asyncpg.create_pool(dsn, min_size=1, max_size=3)
    try:
        return await _timed(lambda rows: _naive(pool, rows), batches, cpu)
    finally:
        await pool.close()


async def _timed(
    write: Writer, batches: list[list[SealedRow]], cpu: PgCpu
) -> tuple[float, tuple[float, float, float]]:
    await write(batches[0][:1])  # connections open, statements prepared
    cpu.start()
    started = time.perf_counter()
    for batch in batches:
        await write(batch)
    seconds = time.perf_counter() - started
    return seconds, cpu.stop()


async def _raw(conn: asyncpg.Connection, rows: Sequence[SealedRow]) -> None:
    newest = {r.identity: r for r in sorted(rows, key=lambda r: (r.version, r.message_id))}
    chosen = list(newest.values())
    await conn.execute(UPSERT_BATCH, *array_columns(chosen))


async def _naive(pool: asyncpg.Pool, rows: Sequence[SealedRow]) -> None:
    for r in rows:
        await pool.execute(
            NAIVE_UPSERT,
            r.identity.kind,
            r.identity.client_id,
            r.identity.backup_method,
            r.identity.pair_id,
            r.sealed,
            Keyring.key_id_of(r.sealed),
            r.version,
            r.message_id,
        )


async def main_async(args: argparse.Namespace) -> None:
    admin = await asyncpg.connect(PG_ADMIN)
    try:
        data_directory = await admin.fetchval("SHOW data_directory")
        autovacuum = await admin.fetchval("SHOW autovacuum")
    finally:
        await admin.close()
    postmaster = postmaster_pid(data_directory)
    if postmaster is None:
        raise SystemExit(f"postmaster.pid not readable in {data_directory}: run as root")
    print(
        f"{args.rows:,} rows (naive: {args.naive_rows:,}), batches of {args.batch}, "
        f"{args.overwrite:.0%} overwrites, {args.clients:.0%} client shares owing a report; "
        f"autovacuum = {autovacuum}\n"
    )
    print(HEADER, flush=True)
    for _ in range(args.repeat):
        for variant in args.variants:
            result = await run_variant(variant, args, postmaster)
            print(result.line(), flush=True)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rows", type=int, default=50_000)
    parser.add_argument("--naive-rows", type=int, default=10_000)
    parser.add_argument("--batch", type=int, default=128)
    parser.add_argument("--overwrite", type=float, default=0.5, help="share of overwrites")
    parser.add_argument("--clients", type=float, default=0.1, help="share owing a report")
    parser.add_argument("--variants", default=",".join(VARIANTS))
    parser.add_argument("--repeat", type=int, default=1, help="run the variants this many times")
    parser.add_argument("--keep", action="store_true", help="keep the scratch databases")
    args = parser.parse_args()
    args.variants = [v for v in args.variants.split(",") if v]
    unknown = set(args.variants) - set(VARIANTS)
    if unknown:
        parser.error(f"unknown variants: {', '.join(sorted(unknown))}")
    asyncio.run(main_async(args))


if __name__ == "__main__":
    main()
