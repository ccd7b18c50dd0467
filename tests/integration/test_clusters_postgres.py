"""PostgreSQL as a cluster: every way a database connection dies under a write leaves the worker
up and everything stored (issue 16: a worker exited on asyncpg's InternalClientError), and a
multi-host DSN with target_session_attrs=read-write writes to the primary wherever it is listed."""

from __future__ import annotations

import asyncio
import os
import signal
from collections.abc import Callable, Iterator, Sequence
from typing import Any, cast

import asyncpg
import pytest

from sharevault.config import Settings
from sharevault.crypto import Identity, Keyring
from sharevault.db import SealedRow, Store, migrate, open_store
from sharevault.worker.decode import Share
from sharevault.worker.writing import Fate, Writer
from tests.support.backupload import BackupLoad, Client, assert_nothing_lost
from tests.support.pgcluster import PgCluster, multi_host_dsn
from tests.support.processes import WorkerProcess, outage_env
from tests.support.waiting import eventually

pytestmark = pytest.mark.cluster

# How a connection can die under a statement, as asyncpg reports it.
CONNECTION_DEATHS: list[BaseException] = [
    asyncpg.exceptions.InternalClientError(
        "cannot switch to state 12; another operation (2) is in progress"
    ),
    asyncpg.exceptions.ConnectionDoesNotExistError("connection was closed in the middle"),
    asyncpg.exceptions.InterfaceError("connection is closed"),
    ConnectionResetError("Connection reset by peer"),
    asyncpg.exceptions.TargetServerAttributeNotMatched("None of the hosts match"),
]


class DyingStore(Store):
    """The real store, whose next upserts first die in each way of `deaths` in turn."""

    def __init__(self, pool: asyncpg.Pool, deaths: Sequence[BaseException]) -> None:
        super().__init__(pool)
        self.deaths = list(deaths)

    async def upsert_batch(self, rows: Sequence[SealedRow]) -> set[str]:
        if self.deaths:
            raise self.deaths.pop(0)
        return await super().upsert_batch(rows)


async def test_the_writer_holds_through_every_kind_of_connection_death(database_url: str) -> None:
    identity = Identity("custodian", "dying-1", "GDRIVE", "")
    rows = [SealedRow(identity, b"\x01k-sealed", 1, "dying-msg-1")]
    shares = [Share(cast(Any, None), row, {}) for row in rows]
    async with open_store(database_url, size=2) as real:
        store = DyingStore(real.pool, CONNECTION_DEATHS)
        outcomes = await Writer(store, hold=60).write(shares, asyncio.Event())
        assert store.deaths == [], "every death was met"
        assert [o.fate for o in outcomes] == [Fate.STORED]
        assert await real.stored_version(identity) == (1, "dying-msg-1")


@pytest.fixture
def primary() -> Iterator[PgCluster]:
    cluster = PgCluster().init()
    cluster.start()
    try:
        yield cluster
    finally:
        cluster.destroy()


async def private_database(cluster: PgCluster) -> str:
    admin = await asyncpg.connect(cluster.dsn())
    await admin.execute("CREATE DATABASE sharevault")
    await admin.close()
    await migrate(cluster.dsn("sharevault"))
    return cluster.dsn("sharevault")


async def test_the_worker_outlives_backends_killed_under_writes(
    gateway_factory: Callable[..., Any],
    settings_factory: Callable[..., Settings],
    workers: Callable[[dict[str, str]], WorkerProcess],
    primary: PgCluster,
) -> None:
    dsn = await private_database(primary)
    settings = settings_factory(database_url=dsn, commit_wait=0.5)
    gateway: Client = await gateway_factory(settings)
    worker = workers(outage_env(settings))
    admin = await asyncpg.connect(primary.dsn())
    kills = 0
    async with BackupLoad(gateway, "pg-kill") as load:
        await load.until(lambda: load.answers["committed"] >= 20)
        for round_ in range(8):
            # Batches are in flight all the time under this load: kill under them.
            await asyncio.sleep(0.3)
            pids = await admin.fetch(
                "SELECT pid FROM pg_stat_activity WHERE datname = 'sharevault'"
                " AND backend_type = 'client backend'"
            )
            if round_ == 4 and pids:
                # SIGKILL of a backend: the postmaster ends every session and recovers.
                os.kill(pids[0]["pid"], signal.SIGKILL)
                await admin.close()
                admin = await eventually(lambda: _connect(primary.dsn()), timeout=30)
            else:
                for row in pids:
                    await admin.execute("SELECT pg_terminate_backend($1)", row["pid"])
            kills += len(pids)
            assert worker.proc.poll() is None, f"the worker exited:\n{worker.output()[-3000:]}"
        before = load.answers["committed"]
        await load.until(lambda: load.answers["committed"] >= before + 20, timeout=60)
    await admin.close()
    assert kills > 8, "the test meant to kill connections under the writes"
    assert worker.proc.poll() is None, f"the worker exited:\n{worker.output()[-3000:]}"
    await assert_nothing_lost(lambda: asyncpg.connect(dsn), Keyring(settings.keyring), load)
    stats = await worker.stop()
    print(f"\nbackends killed: {kills}; {stats}; {dict(load.answers)}")


async def _connect(dsn: str) -> asyncpg.Connection | None:
    try:
        return await asyncpg.connect(dsn, timeout=2)
    except (OSError, asyncpg.PostgresError):
        return None


async def test_a_multi_host_dsn_writes_to_the_primary_listed_second(
    gateway_factory: Callable[..., Any],
    settings_factory: Callable[..., Settings],
    worker_factory: Callable[..., Any],
    primary: PgCluster,
) -> None:
    await private_database(primary)
    replica = await asyncio.to_thread(primary.replica, synchronous=True)
    dsn = multi_host_dsn([replica, primary], "sharevault")
    settings = settings_factory(database_url=dsn, commit_wait=5.0)
    gateway: Client = await gateway_factory(settings)
    worker_factory(settings)
    resp = await gateway.get("/readyz")
    body = await resp.json()
    assert resp.status == 200, body
    assert body["nodes"]["database"] == primary.node
    async with BackupLoad(gateway, "multi-host", identities=4) as load:
        # "committed": the gateway heard the commit notice, so the listener is on the primary.
        await load.until(lambda: load.answers["committed"] >= 10)
    assert set(load.statuses) == {200}, load.statuses
    await assert_nothing_lost(
        lambda: asyncpg.connect(replica.dsn("sharevault")), Keyring(settings.keyring), load
    )
