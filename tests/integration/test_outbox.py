"""The outbox as claim → send → settle: a hanging Portal pins no connection and no row lock, and a
sender's lease runs out for another to take the row."""

from __future__ import annotations

import asyncio
import uuid
from collections.abc import AsyncIterator, Callable

import asyncpg
import pytest

from sharevault.config import Settings
from sharevault.crypto import Identity, Keyring
from sharevault.db import Outbox, OutboxOutcome, Store, open_store
from sharevault.messages import bearer_identity
from sharevault.portal import PortalClient
from sharevault.worker.outbox import OutboxSender
from tests.support import FakePortal
from tests.support.portal_fixtures import CLIENT_A, TOKEN_A
from tests.support.waiting import eventually

POOL_SIZE = 2


@pytest.fixture
async def store(settings: Settings) -> AsyncIterator[Store]:
    dsn = settings.database_url.get_secret_value()
    async with open_store(dsn, size=POOL_SIZE, min_size=POOL_SIZE) as s:
        yield s


async def owe_report(db: asyncpg.Connection, settings: Settings) -> int:
    """An outbox row as the worker writes it with a stored client share."""
    identity = Identity("client", CLIENT_A, "PASSWORD", f"pair-{uuid.uuid4().hex[:8]}")
    message_id = uuid.uuid4().hex
    bound = bearer_identity(identity)
    sealed = Keyring(settings.keyring).seal(TOKEN_A.encode(), bound, 1, message_id)
    row_id: int = await db.fetchval(
        "INSERT INTO outbox (message_id, client_id, backup_method, pair_id, report_api,"
        " bearer_sealed) VALUES ($1, $2, $3, $4, 'v3', $5) RETURNING id",
        message_id,
        identity.client_id,
        identity.backup_method,
        identity.pair_id,
        sealed,
    )
    return row_id


async def test_a_hanging_portal_holds_no_connection_and_no_lock(
    settings_factory: Callable[..., Settings],
    store: Store,
    db: asyncpg.Connection,
    fake_portal: FakePortal,
) -> None:
    settings = settings_factory(portal_timeout=5.0)
    row_id = await owe_report(db, settings)
    fake_portal.delay = 30.0  # Portal takes the request and does not answer
    stop = asyncio.Event()
    async with PortalClient(fake_portal.url, timeout=settings.portal_timeout) as portal:
        sender = OutboxSender(settings, store, Keyring(settings.keyring), portal)
        task = asyncio.create_task(sender.run(stop))
        try:
            await eventually(lambda: fake_portal.arrivals, timeout=10)
            assert sender.sending
            # Every pooled connection is free while the report waits for Portal ...
            assert store.pool.get_idle_size() == POOL_SIZE
            # ... no transaction is open on the database ...
            open_tx = await db.fetchval(
                "SELECT count(*) FROM pg_stat_activity WHERE datname = current_database()"
                " AND state LIKE 'idle in transaction%'"
            )
            assert open_tx == 0
            # ... and the row is not locked: anyone may take it at once.
            async with db.transaction():
                locked = await db.fetchval(
                    "SELECT id FROM outbox WHERE id = $1 FOR UPDATE NOWAIT", row_id
                )
            assert locked == row_id
            # Nor is it due for another sender while the lease lasts.
            assert await Outbox(store).claim(10, 60) == []
            fake_portal.heal()
            await eventually(lambda: sender.sent == 1, timeout=10)
        finally:
            stop.set()
            await asyncio.wait_for(task, 10)
    status = await db.fetchrow(
        "SELECT status, attempts, bearer_sealed FROM outbox WHERE id = $1", row_id
    )
    assert status is not None
    assert (status["status"], status["attempts"], status["bearer_sealed"]) == ("sent", 1, None)
    assert len(fake_portal.reports()) == 1


async def test_a_lease_runs_out_and_another_sender_takes_the_row(
    settings: Settings, store: Store, db: asyncpg.Connection
) -> None:
    row_id = await owe_report(db, settings)
    first, second = Outbox(store), Outbox(store)
    claimed = await first.claim(10, 0.5)
    assert [row.id for row in claimed] == [row_id]
    assert await second.claim(10, 0.5) == []  # leased: not due for anyone else
    # The first sender dies holding it (never settles); its lease runs out.
    again = await eventually(lambda: second.claim(10, 30), timeout=5)
    assert [row.id for row in again] == [row_id]
    assert again[0].lease_until != claimed[0].lease_until
    # The first sender's late answer records nothing: the row is the second's now.
    assert await first.settle(claimed, [OutboxOutcome(row_id, "failed", reason="late")]) == 0
    assert await second.settle(again, [OutboxOutcome(row_id, "sent", http_status=200)]) == 1
    row = await db.fetchrow("SELECT status, attempts, last_error FROM outbox WHERE id = $1", row_id)
    assert row is not None
    assert (row["status"], row["attempts"], row["last_error"]) == ("sent", 1, None)
    # Settled: nobody claims it again.
    await asyncio.sleep(0.6)
    assert await first.claim(10, 30) == []


async def test_a_released_lease_is_due_at_once(
    settings: Settings, store: Store, db: asyncpg.Connection
) -> None:
    row_id = await owe_report(db, settings)
    outbox = Outbox(store)
    claimed = await outbox.claim(10, 60)
    await outbox.release(claimed)
    assert [row.id for row in await outbox.claim(10, 60)] == [row_id]
