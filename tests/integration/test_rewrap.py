"""Re-wrapping under the current key against the real PostgreSQL: newer writes and busy rows win,
unreadable rows stay as they are, and the outbox knows which key sealed each bearer."""

from __future__ import annotations

import asyncio
import base64
import time
from collections.abc import AsyncIterator
from dataclasses import replace

import asyncpg
import pytest

from sharevault.crypto import Identity, Keyring, TamperedError
from sharevault.db import SealedRow, Store, open_store
from sharevault.messages import bearer_identity
from sharevault.ops.rotation import key_uses, rotate
from tests.support.environment import KEY_A, KEY_B
from tests.support.leakcheck import sensitive
from tests.support.sharing import legacy_seal

A, B = base64.b64decode(KEY_A), base64.b64decode(KEY_B)
NEW = Keyring([("ka", A)])
OLD = Keyring([("kb", B)])
BOTH = Keyring([("ka", A), ("kb", B)])
STRANGER = Keyring([("kz", b"Z" * 32)])
SHARE = b"rewrap-share-secret-"
BEARER = b"rewrap-bearer-secret-"
sensitive(SHARE.decode(), BEARER.decode())


@pytest.fixture
async def store(database_url: str) -> AsyncIterator[Store]:
    async with open_store(database_url, size=3) as s:
        yield s


def custodian(n: int, version: int = 1, keyring: Keyring = OLD) -> SealedRow:
    identity = Identity("custodian", f"cl-{n:03d}", "GDRIVE", "")
    message_id = f"m{n}-{version}"
    sealed = keyring.seal(SHARE + b"%d" % version, identity, version, message_id)
    return SealedRow(identity, sealed, version, message_id)


def client(n: int, keyring: Keyring = OLD) -> SealedRow:
    """A client share that owes Portal a report: an outbox row with a sealed bearer."""
    identity = Identity("client", f"app-{n:03d}", "PASSKEY", f"pair-{n}")
    return SealedRow(
        identity,
        keyring.seal(SHARE + b"client", identity, 1, f"c{n}"),
        1,
        f"c{n}",
        report_api="v3",
        bearer_sealed=keyring.seal(BEARER + b"%d" % n, bearer_identity(identity), 1, f"c{n}"),
    )


async def test_a_newer_write_between_read_and_rewrap_is_never_overwritten(store: Store) -> None:
    await store.upsert_batch([custodian(n) for n in range(3)])
    page, last = await store.shares_to_rewrap("v2:ka", None, 10)
    assert [r.identity.client_id for r in page] == ["cl-000", "cl-001", "cl-002"]
    assert last == page[-1].identity
    # A worker stores a newer share of cl-001, sealed (by an older gateway) under the old key.
    await store.upsert_batch([custodian(1, version=2)])
    resealed = [
        replace(
            r,
            sealed=NEW.seal(
                BOTH.open(r.sealed, r.identity, r.version, r.message_id),
                r.identity,
                r.version,
                r.message_id,
            ),
        )
        for r in page
    ]
    assert await store.rewrap_shares(resealed) == {"m0-1", "m2-1"}
    [kept] = await store.client_shares("custodian", "cl-001")
    assert (kept.version, Keyring.key_id_of(kept.sealed)) == (2, "v2:kb")
    assert BOTH.open(kept.sealed, page[1].identity, 2, "m1-2") == SHARE + b"2"
    # Keyset windows go on after the last row seen; rows under the key come back without data.
    again, last = await store.shares_to_rewrap("v2:ka", None, 2)
    assert ([r.identity.client_id for r in again], last) == (["cl-001"], page[1].identity)
    assert await store.shares_to_rewrap("v2:ka", last, 2) == ([], page[2].identity)
    assert await store.shares_to_rewrap("v2:ka", page[2].identity, 2) == ([], None)


async def test_rows_held_by_a_worker_or_sender_are_skipped_without_waiting(
    store: Store, database_url: str
) -> None:
    await store.upsert_batch([custodian(n) for n in range(4)] + [client(1), client(2)])
    holder = await asyncpg.connect(database_url)
    try:
        async with holder.transaction():
            # As a worker's batch upsert and the outbox sender's claim hold them.
            await holder.execute("SELECT 1 FROM shares WHERE client_id = 'cl-002' FOR UPDATE")
            await holder.execute("SELECT 1 FROM outbox WHERE message_id = 'c2' FOR UPDATE")
            started = time.monotonic()
            summary = await asyncio.wait_for(rotate(store, BOTH, batch_size=2, pause=0.01), 10)
            assert time.monotonic() - started < 5
        assert (summary.shares, summary.bearers) == (5, 1)  # 4 custodian + 1 client share
        assert summary.busy >= 2 and summary.remaining == 2
    finally:
        await holder.close()
    # Released: the next run (as after an interruption) finishes the job.
    again = await rotate(store, BOTH, batch_size=2)
    assert (again.shares, again.bearers, again.remaining) == (1, 1, 0)
    assert await store.key_counts() == {"shares": {"v2:ka": 6}, "outbox": {"v2:ka": 2}}


async def test_rotation_keeps_every_share_and_bearer_readable_with_the_new_key_alone(
    store: Store, db: asyncpg.Connection
) -> None:
    await store.upsert_batch([custodian(n) for n in range(7)] + [client(n) for n in range(5)])
    # A settled report holds no bearer any more: nothing to re-wrap there.
    await db.execute(
        "UPDATE outbox SET status = 'sent', bearer_sealed = NULL WHERE message_id = 'c0'"
    )
    versions = "SELECT client_id, version, message_id, updated_at FROM shares ORDER BY client_id"
    before = [tuple(r) for r in await db.fetch(versions)]
    dry = await rotate(store, BOTH, batch_size=3, dry_run=True)
    assert (dry.shares, dry.bearers, dry.remaining) == (12, 4, 16)
    assert await store.key_counts() == {"shares": {"v2:kb": 12}, "outbox": {"v2:kb": 4}}
    done = await rotate(store, BOTH, batch_size=3)
    assert (done.shares, done.bearers, done.busy, done.remaining) == (12, 4, 0, 0)
    # A re-wrap is not a new share: read-your-writes and the version rule see no change.
    assert [tuple(r) for r in await db.fetch(versions)] == before
    for row in await db.fetch("SELECT * FROM shares"):
        identity = Identity(row["kind"], row["client_id"], row["backup_method"], row["pair_id"])
        assert row["key_id"] == "v2:ka"
        assert NEW.open(
            row["sealed"], identity, row["version"], row["message_id"], legacy=False
        ).startswith(SHARE)
    for row in await db.fetch("SELECT * FROM outbox WHERE bearer_sealed IS NOT NULL"):
        identity = Identity("client", row["client_id"], row["backup_method"], row["pair_id"])
        assert row["key_id"] == "v2:ka"
        bearer = NEW.open(
            row["bearer_sealed"], bearer_identity(identity), None, row["message_id"], legacy=False
        )
        assert bearer.startswith(BEARER)


async def test_rows_under_a_key_not_in_the_keyring_are_reported_and_left_alone(
    store: Store, db: asyncpg.Connection
) -> None:
    await store.upsert_batch([custodian(1), custodian(2, keyring=STRANGER), client(3, STRANGER)])
    before = await db.fetchval("SELECT sealed FROM shares WHERE client_id = 'cl-002'")
    summary = await rotate(store, BOTH)
    assert (summary.shares, summary.unreadable, summary.remaining) == (1, 3, 3)
    assert await db.fetchval("SELECT sealed FROM shares WHERE client_id = 'cl-002'") == before
    uses = {u.key_id: u for u in key_uses(await store.key_counts(), BOTH)}
    assert list(uses) == ["ka", "kb", "kz"]
    assert (uses["ka"].shares, uses["ka"].current, uses["kb"].shares) == (1, True, 0)
    assert (uses["kz"].shares, uses["kz"].bearers, uses["kz"].in_keyring) == (2, 1, False)


async def test_legacy_seals_under_the_current_key_are_resealed_bound_to_their_message(
    store: Store, db: asyncpg.Connection
) -> None:
    # Rows stored before seals bound version and message id (tagged by the bare key id).
    rows = [custodian(n, keyring=NEW) for n in range(3)] + [client(7, NEW)]
    legacy = [
        replace(
            r,
            sealed=legacy_seal("ka", A, SHARE + b"old", r.identity),
            bearer_sealed=r.bearer_sealed
            and legacy_seal("ka", A, BEARER + b"old", bearer_identity(r.identity)),
        )
        for r in rows[2:]
    ]
    await store.upsert_batch(rows[:2] + legacy)
    uses = {u.key_id: u for u in key_uses(await store.key_counts(), NEW)}
    assert (uses["ka"].shares, uses["ka"].bearers, uses["ka"].legacy) == (4, 1, 3)
    strict = Keyring([("ka", A)], accept_legacy=False)
    with pytest.raises(TamperedError):
        strict.open(legacy[0].sealed, legacy[0].identity, legacy[0].version, "m2-1")
    # Rotation re-seals them whatever ACCEPT_LEGACY_SEALS says: it is their way out.
    summary = await rotate(store, strict)
    assert (summary.shares, summary.bearers, summary.unreadable, summary.remaining) == (2, 1, 0, 0)
    assert await store.key_counts() == {"shares": {"v2:ka": 4}, "outbox": {"v2:ka": 1}}
    for row in await db.fetch("SELECT * FROM shares"):
        identity = Identity(row["kind"], row["client_id"], row["backup_method"], row["pair_id"])
        assert strict.open(row["sealed"], identity, row["version"], row["message_id"])
        with pytest.raises(TamperedError):
            strict.open(row["sealed"], identity, row["version"] + 1, row["message_id"])
    bearer_row = await db.fetchrow("SELECT * FROM outbox")
    assert bearer_row is not None
    owner = Identity("client", bearer_row["client_id"], "PASSKEY", bearer_row["pair_id"])
    bearer = strict.open(
        bearer_row["bearer_sealed"], bearer_identity(owner), None, bearer_row["message_id"]
    )
    assert bearer == BEARER + b"old"
