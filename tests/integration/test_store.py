"""The versioned upsert, its commit notices and the shares vacuum, against the real PostgreSQL."""

from __future__ import annotations

import asyncio
import os
from collections.abc import AsyncIterator

import asyncpg
import pytest

from sharevault.crypto import Identity
from sharevault.db import (
    COMMIT_CHANNEL,
    CommitListener,
    DeadRows,
    Q,
    SealedRow,
    Store,
    notice_payloads,
    open_store,
    refusal_payloads,
    vacuuming_shares,
)
from tests.support.waiting import eventually

ID = Identity("custodian", "cl-1", "GDRIVE", "p1")
SHARE_BYTES = 8 * 1024


def row(version: int, msg: str, data: bytes = b"\x01k1", identity: Identity = ID) -> SealedRow:
    return SealedRow(identity, data + msg.encode(), version, msg)


def client_row(n: int, version: int, msg: str) -> SealedRow:
    """A client share that owes Portal a report."""
    return SealedRow(
        Identity("client", f"app-{n}", "PASSKEY", f"pair-{n}"),
        b"\x01k" + msg.encode(),
        version,
        msg,
        report_api="v3",
        bearer_sealed=b"\x01k" + os.urandom(40),
        request_id=f"req-{msg}",
    )


def big_rows(count: int, version: int) -> list[SealedRow]:
    """`count` identities with an 8 KB sealed share each (stored out of line, in TOAST)."""
    return [
        SealedRow(
            Identity("custodian", f"big-{n:04d}", "GDRIVE", ""),
            b"\x01k" + os.urandom(SHARE_BYTES),
            version,
            f"big-{n:04d}-v{version}",
        )
        for n in range(count)
    ]


@pytest.fixture
async def store(database_url: str) -> AsyncIterator[Store]:
    async with open_store(database_url, size=2) as s:
        yield s


class Notices:
    """A LISTEN on the commit channel, on a connection of its own (as the gateway does)."""

    def __init__(self, conn: asyncpg.Connection) -> None:
        self.conn = conn
        self.payloads: list[str] = []

    @property
    def ids(self) -> list[str]:
        return [i for p in self.payloads for i in p.split(",")]

    async def wait_for(self, message_id: str) -> None:
        async def arrived() -> bool:
            await self.conn.execute("SELECT 1")  # let pending notifications in
            return message_id in self.ids

        await eventually(arrived, timeout=10)


@pytest.fixture
async def notices(database_url: str) -> AsyncIterator[Notices]:
    conn = await asyncpg.connect(database_url)
    listening = Notices(conn)
    await conn.add_listener(COMMIT_CHANNEL, lambda *args: listening.payloads.append(str(args[3])))
    try:
        yield listening
    finally:
        await conn.close()


async def test_newer_wins_older_and_duplicates_never_overwrite(store: Store) -> None:
    assert await store.upsert_batch([row(10, "m10")]) == {"m10"}
    assert await store.upsert_batch([row(20, "m20")]) == {"m20"}
    assert await store.upsert_batch([row(15, "m15")]) == set()  # older: refused
    assert await store.upsert_batch([row(20, "m20")]) == set()  # duplicate: no change
    assert await store.stored_version(ID) == (20, "m20")
    [stored] = await store.client_shares("custodian", "cl-1")
    assert stored.sealed.endswith(b"m20")


async def test_equal_versions_are_ordered_by_message_id(store: Store) -> None:
    await store.upsert_batch([row(5, "b")])
    assert await store.upsert_batch([row(5, "a")]) == set()
    assert await store.upsert_batch([row(5, "c")]) == {"c"}


async def test_one_batch_with_the_same_identity_twice_keeps_the_newest(store: Store) -> None:
    other = Identity("custodian", "cl-1", "ICLOUD", "")
    applied = await store.upsert_batch(
        [row(3, "m3"), row(9, "m9"), row(4, "m4"), row(1, "o1", identity=other)]
    )
    assert applied == {"m9", "o1"}
    assert await store.stored_version(ID) == (9, "m9")
    shares = await store.client_shares("custodian", "cl-1")
    assert [s.message_id for s in shares] == ["m9", "o1"]  # newest first


async def test_an_empty_batch_applies_nothing(store: Store) -> None:
    assert await store.upsert_batch([]) == set()


async def test_commit_notifies_every_settled_message(store: Store, notices: Notices) -> None:
    await store.upsert_batch([row(3, "m3"), row(9, "m9")])
    await notices.wait_for("m9")
    assert sorted(notices.ids) == ["m3", "m9"]


async def test_a_thousand_ids_are_all_notified_in_payloads_under_8000_bytes(
    store: Store, notices: Notices
) -> None:
    # 500 identities, each twice in the batch: the older of each pair is superseded, not applied,
    # and its waiter must still wake. Ids of 64 characters, the longest a message may carry.
    rows = [
        row(
            version,
            f"{n:03d}-{version}".rjust(64, "x"),
            # One client each: one client keeps only PAIRS_PER_METHOD pairs of a method.
            identity=Identity("custodian", f"c{n}", "M", "p"),
        )
        for n in range(500)
        for version in (1, 2)
    ]
    applied = await store.upsert_batch(rows)
    assert applied == {r.message_id for r in rows if r.version == 2}
    await store.upsert_batch([row(1, "last")])
    await notices.wait_for("last")
    assert sorted(notices.ids) == sorted([r.message_id for r in rows] + ["last"])
    assert len(notices.payloads) > 1
    assert all(len(p.encode()) < 8000 for p in notices.payloads)


def test_notice_payloads_fill_up_to_the_limit_and_never_past_it() -> None:
    ids = [f"{n:02d}" for n in range(10)]  # 2 bytes each, 3 with the comma
    assert notice_payloads(ids, limit=8) == ["00,01,02", "03,04,05", "06,07,08", "09"]
    assert notice_payloads(ids, limit=7) == ["00,01", "02,03", "04,05", "06,07", "08,09"]
    assert notice_payloads([]) == []
    many = [f"{n:064d}" for n in range(1000)]
    payloads = notice_payloads(many)
    assert max(len(p) for p in payloads) <= 7999
    assert [i for p in payloads for i in p.split(",")] == many
    refusals = refusal_payloads("methods_per_client", many)
    assert max(len(p) for p in refusals) <= 7999
    assert all(p.startswith("refused:methods_per_client:") for p in refusals)


async def test_the_listener_tells_commits_from_refusals(store: Store, database_url: str) -> None:
    committed: list[str] = []
    refused: list[tuple[str, list[str]]] = []
    heard = asyncio.Event()

    def on_refused(reason: str, ids: list[str]) -> None:
        refused.append((reason, ids))
        heard.set()

    async def reconnected() -> None:
        return None

    async with CommitListener(database_url, committed.extend, on_refused, reconnected) as listener:
        await asyncio.wait_for(listener.connected.wait(), 10)
        await store.upsert_batch([row(1, "m1")])
        await store.notify_refused("methods_per_client", ["m2", "m3"])
        await asyncio.wait_for(heard.wait(), 10)
    assert committed == ["m1"]  # notices arrive in commit order
    assert refused == [("methods_per_client", ["m2", "m3"])]


async def test_a_failing_batch_stores_nothing_and_wakes_nobody(
    store: Store, notices: Notices, db: asyncpg.Connection
) -> None:
    bogus = Identity("bogus", "cl-1", "GDRIVE", "")  # the CHECK on kind refuses it
    batch = [row(1, "good"), client_row(1, 1, "owed"), row(1, "bad", identity=bogus)]
    with pytest.raises(asyncpg.CheckViolationError):
        await store.upsert_batch(batch)
    # Notices arrive in commit order: once this one is in, any from the failed batch would be.
    await store.upsert_batch([row(1, "after", identity=Identity("custodian", "x", "M", ""))])
    await notices.wait_for("after")
    assert notices.ids == ["after"]
    assert await db.fetchval("SELECT count(*) FROM shares") == 1
    assert await db.fetchval("SELECT count(*) FROM outbox") == 0


async def test_applied_client_shares_owe_one_report_each(
    store: Store, db: asyncpg.Connection
) -> None:
    assert await store.upsert_batch([client_row(1, 5, "c1-v5")]) == {"c1-v5"}
    # c1-v3 is older than what is stored, c2-v1 is superseded in its batch: neither owes a report.
    # c1-v5 again (a redelivery) applies nothing and adds no second report.
    applied = await store.upsert_batch(
        [
            client_row(1, 3, "c1-v3"),
            client_row(2, 1, "c2-v1"),
            client_row(2, 2, "c2-v2"),
            client_row(3, 1, "c3-v1"),
            row(1, "custodian"),  # no report owed
        ]
    )
    assert applied == {"c2-v2", "c3-v1", "custodian"}
    assert await store.upsert_batch([client_row(1, 5, "c1-v5")]) == set()
    owed = await db.fetch(
        "SELECT message_id, client_id, backup_method, pair_id, report_api, request_id, status,"
        " bearer_sealed IS NOT NULL AS has_bearer FROM outbox ORDER BY message_id"
    )
    assert [tuple(r.values()) for r in owed] == [
        ("c1-v5", "app-1", "PASSKEY", "pair-1", "v3", "req-c1-v5", "pending", True),
        ("c2-v2", "app-2", "PASSKEY", "pair-2", "v3", "req-c2-v2", "pending", True),
        ("c3-v1", "app-3", "PASSKEY", "pair-3", "v3", "req-c3-v1", "pending", True),
    ]


async def test_settled_reports_are_pruned_after_the_keep_time_pending_ones_never(
    store: Store, db: asyncpg.Connection
) -> None:
    await store.upsert_batch([client_row(n, 1, f"r{n}") for n in range(5)])
    # r0, r1 settled 8 days ago, r2 a minute ago; r3 still pending although created long ago.
    await db.execute(
        "UPDATE outbox SET status = 'sent', bearer_sealed = NULL,"
        " finished_at = now() - interval '8 days' WHERE message_id IN ('r0', 'r1')"
    )
    await db.execute(
        "UPDATE outbox SET status = 'failed', bearer_sealed = NULL,"
        " finished_at = now() - interval '1 minute' WHERE message_id = 'r2'"
    )
    await db.execute(
        "UPDATE outbox SET created_at = now() - interval '30 days' WHERE message_id = 'r3'"
    )
    week = 7 * 86400.0
    assert await store.prune_outbox(week, limit=1) == 1  # in chunks
    assert await store.prune_outbox(week) == 1
    assert await store.prune_outbox(week) == 0
    left = await db.fetch("SELECT message_id, status FROM outbox ORDER BY message_id")
    assert [tuple(r.values()) for r in left] == [
        ("r2", "failed"),
        ("r3", "pending"),
        ("r4", "pending"),
    ]


async def test_a_batch_is_one_statement_and_a_release_sends_nothing(database_url: str) -> None:
    """No BEGIN/COMMIT, no separate outbox insert or NOTIFY, and no pool reset query."""
    async with open_store(database_url, size=1) as one:
        sent: list[str] = []
        async with one.pool.acquire() as conn:
            conn.add_query_logger(lambda q: sent.append(q.query))
        # The first use on a connection prepares the statement (and asyncpg looks up its types).
        await one.upsert_batch([row(1, "m1")])
        await asyncio.sleep(0)  # query loggers are called soon, not at once
        sent.clear()
        await one.upsert_batch([row(2, "m2"), client_row(1, 1, "c1")])
        await one.upsert_batch([row(3, "m3")])
        await asyncio.sleep(0)
        assert sent == [Q["store_batch"], Q["store_batch"]]
        async with one.pool.acquire() as conn:
            assert not conn.is_in_transaction()


# --- vacuum where autovacuum is off --------------------------------------------------------------


async def flush_statistics(store: Store) -> None:
    """Make the (one) pool backend report its row counts now rather than within ~1-10 s."""
    async with store.pool.acquire() as conn:
        await conn.execute("SELECT pg_stat_force_next_flush()")


async def vacuum_counts(db: asyncpg.Connection) -> tuple[int, int]:
    """How many times the shares heap and its TOAST table have been vacuumed by hand."""
    row = await db.fetchrow(
        "SELECT pg_stat_get_vacuum_count(c.oid) AS heap, pg_stat_get_vacuum_count(c.reltoastrelid)"
        " AS toast FROM pg_class c WHERE c.oid = 'shares'::regclass"
    )
    assert row is not None
    return row["heap"], row["toast"]


@pytest.fixture
async def no_autovacuum(db: asyncpg.Connection) -> asyncpg.Connection:
    """Autovacuum off for the shares table whatever the server's setting (here it is off)."""
    await db.execute(
        "ALTER TABLE shares SET (autovacuum_enabled = false, toast.autovacuum_enabled = false)"
    )
    return db


async def test_vacuum_keeps_an_overwritten_table_from_growing(
    database_url: str, no_autovacuum: asyncpg.Connection
) -> None:
    db = no_autovacuum
    async with open_store(database_url, size=1) as one:
        await one.upsert_batch(big_rows(100, version=0))
        first = await db.fetchval("SELECT pg_total_relation_size('shares')")
        for version in range(1, 9):
            await one.upsert_batch(big_rows(100, version))
            await flush_statistics(one)
            before = await one.dead_rows()
            assert not before.autovacuum
            assert before.toast_dead >= 100  # each share is several TOAST chunks
            assert await one.vacuum_if_due(min_dead=50) == before
            after = await one.dead_rows()
            assert after.heap_dead <= before.heap_dead // 10
            assert after.toast_dead <= before.toast_dead // 10
        # Eight overwrites of every share, yet the space of the old versions was reused: the
        # table holds about two versions' worth plus free-space maps, 2.3x (8.1x without vacuums).
        assert await db.fetchval("SELECT pg_total_relation_size('shares')") < 3 * first
        assert await vacuum_counts(db) == (8, 8)


async def test_no_vacuum_before_enough_dead_rows(
    database_url: str, no_autovacuum: asyncpg.Connection
) -> None:
    async with open_store(database_url, size=1) as one:
        await one.upsert_batch(big_rows(20, version=0))
        await one.upsert_batch(big_rows(20, version=1))
        await flush_statistics(one)
        dead = await one.dead_rows()
        assert dead.heap_dead == 20
        assert await one.vacuum_if_due() is None  # 20 dead rows, ~100 chunks: under 1,000
        assert await vacuum_counts(no_autovacuum) == (0, 0)


def test_vacuum_is_due_only_past_the_threshold_and_only_without_autovacuum() -> None:
    assert DeadRows(False, 10_000, 3_001, 0, 0).due()  # > 1,000 + 0.2 * 10,000
    assert not DeadRows(False, 10_000, 3_000, 0, 0).due()
    assert DeadRows(False, 10_000, 0, 50_000, 11_001).due()  # TOAST counts on its own
    assert not DeadRows(True, 10_000, 9_000, 50_000, 40_000).due()  # autovacuum's job


async def test_the_worker_side_loop_vacuums_while_shares_are_written(
    database_url: str, no_autovacuum: asyncpg.Connection
) -> None:
    async with (
        open_store(database_url, size=2) as two,
        vacuuming_shares(two, look_every=20, look_idle=0.2),
    ):
        version = 0

        async def overwrite_until_vacuumed() -> bool:
            nonlocal version
            version += 1
            await two.upsert_batch(big_rows(20, version))
            heap, toast = await vacuum_counts(no_autovacuum)
            return heap >= 1 and toast >= 1

        await eventually(overwrite_until_vacuumed, timeout=60)
