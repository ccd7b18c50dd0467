"""Outages under a steady load of backups, with real worker processes: the broker link of the
gateway and of the worker cut by a proxy, and a private PostgreSQL cluster stopped and started.
After each: every share that got a 2xx is stored with its newest version, and no message was
delivered more than a few times."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator, Callable, Iterator
from typing import Any

import asyncpg
import pytest

from sharevault.config import Settings
from sharevault.crypto import Keyring
from sharevault.db import migrate
from tests.support.backupload import BackupLoad, Client, assert_nothing_lost
from tests.support.environment import AMQP_URL
from tests.support.faultproxy import FaultProxy, fault_proxy
from tests.support.pgcluster import PgCluster
from tests.support.processes import WorkerProcess, outage_env
from tests.support.waiting import eventually

pytestmark = pytest.mark.slow


@pytest.fixture
async def broker_proxy() -> AsyncIterator[FaultProxy]:
    async with fault_proxy("127.0.0.1", 5672) as proxy:
        yield proxy


def proxied(proxy: FaultProxy) -> str:
    return proxy.url("amqp", AMQP_URL.split("//", 1)[1].split("@", 1)[0])


async def readiness(gateway: Client) -> tuple[int, dict[str, Any]]:
    resp = await gateway.get("/readyz")
    return resp.status, await resp.json()


async def test_gateway_broker_cut_fails_fast_reconnects_and_loses_nothing(
    gateway_factory: Callable[..., Any],
    settings_factory: Callable[..., Settings],
    broker_proxy: FaultProxy,
    workers: Callable[[dict[str, str]], WorkerProcess],
    database_url: str,
) -> None:
    # A confirm that never comes would take PUBLISH_TIMEOUT: the refusals must come at once.
    settings = settings_factory(amqp_url=proxied(broker_proxy), commit_wait=1.0, publish_timeout=5)
    gateway: Client = await gateway_factory(settings)
    worker = workers(outage_env(settings_factory()))
    async with BackupLoad(gateway, "gw-cut") as load:
        await load.until(lambda: load.total_acked >= 40)
        broker_proxy.cut()
        _status, body = await eventually(lambda: _unready(gateway, "broker"))
        assert body["checks"]["broker"] == "down"
        assert (
            "connection lost" in body["down"]["broker"] or "not connected" in body["down"]["broker"]
        )
        await load.until(lambda: len(load.refusals) >= 30)
        acked_during_cut = load.total_acked
        await asyncio.sleep(1.0)
        broker_proxy.restore()
        await eventually(lambda: _ready(gateway))
        await load.until(lambda: load.total_acked >= acked_during_cut + 40)
    print(
        f"\ngateway cut: {len(load.refusals)} refusals, slowest {max(load.refusals) * 1000:.0f} ms;"
        f" {load.total_acked} acknowledged"
    )
    assert max(load.refusals) < settings.publish_timeout / 2, "a 503 waited for a confirm"
    assert load.missing_retry_after == 0
    assert set(load.statuses) <= {200, 503}, load.statuses
    await assert_nothing_lost(
        lambda: asyncpg.connect(database_url), Keyring(settings.keyring), load
    )
    stats = await worker.stop()
    assert stats["max_deliveries"] <= 2


async def _unready(gateway: Client, what: str) -> tuple[int, dict[str, Any]] | None:
    status, body = await readiness(gateway)
    return (status, body) if status == 503 and body["checks"][what] == "down" else None


async def _ready(gateway: Client) -> bool:
    return (await readiness(gateway))[0] == 200


async def test_worker_broker_cut_resumes_and_lost_acks_are_harmless(
    gateway_factory: Callable[..., Any],
    settings_factory: Callable[..., Settings],
    broker_proxy: FaultProxy,
    workers: Callable[[dict[str, str]], WorkerProcess],
    database_url: str,
    db: asyncpg.Connection,
) -> None:
    settings = settings_factory(commit_wait=0.5)
    gateway: Client = await gateway_factory(settings)
    worker = workers(outage_env(settings_factory(amqp_url=proxied(broker_proxy))))
    async with BackupLoad(gateway, "wk-cut") as load:
        await load.until(lambda: load.answers["committed"] >= 20)
        # The worker commits a batch it can no longer ack: hold it inside its transaction...
        lock = await asyncpg.connect(database_url)
        tx = lock.transaction()
        await tx.start()
        await lock.execute("LOCK TABLE shares IN EXCLUSIVE MODE")
        await eventually(lambda: _waiting_on_lock(db))
        # ...cut its broker link meanwhile, then let the commit through: the acks are lost.
        broker_proxy.cut()
        await asyncio.sleep(1.0)
        broker_proxy.restore()
        await tx.rollback()
        await lock.close()
        await eventually(lambda: worker.output().count("worker consuming") >= 2)
        before = load.answers["committed"]
        await load.until(lambda: load.answers["committed"] >= before + 20)
        # A second, plain cut under load.
        broker_proxy.cut()
        await asyncio.sleep(0.5)
        broker_proxy.restore()
        before = load.answers["committed"]
        await load.until(lambda: load.answers["committed"] >= before + 20)
    await assert_nothing_lost(
        lambda: asyncpg.connect(database_url), Keyring(settings.keyring), load
    )
    stats = await worker.stop()
    log = worker.output()
    print(f"\nworker cut: {stats}")
    assert "could not settle delivery" in log, "the test meant to lose acks with the channel"
    assert "broker connection for consuming lost" in log
    assert stats["redelivered"] > 0
    assert stats["max_deliveries"] <= 3, "bounded: one more delivery per cut at most"
    duplicates = await db.fetchval(
        "SELECT count(*) - count(DISTINCT client_id) FROM shares WHERE client_id LIKE 'wk-cut-%'"
    )
    assert duplicates == 0


async def _waiting_on_lock(db: asyncpg.Connection) -> bool:
    waiting = await db.fetchval(
        "SELECT count(*) FROM pg_stat_activity"
        " WHERE datname = current_database() AND wait_event_type = 'Lock'"
    )
    return bool(waiting)


@pytest.fixture
def pg_cluster() -> Iterator[PgCluster]:
    cluster = PgCluster().init()
    cluster.start()
    try:
        yield cluster
    finally:
        cluster.destroy()


async def test_database_stop_and_start_under_load_holds_then_resumes(
    gateway_factory: Callable[..., Any],
    settings_factory: Callable[..., Settings],
    workers: Callable[[dict[str, str]], WorkerProcess],
    pg_cluster: PgCluster,
) -> None:
    admin = await asyncpg.connect(pg_cluster.dsn())
    await admin.execute("CREATE DATABASE sharevault")
    await admin.close()
    dsn = pg_cluster.dsn("sharevault")
    await migrate(dsn)
    settings = settings_factory(database_url=dsn, commit_wait=0.5)
    gateway: Client = await gateway_factory(settings)
    worker = workers(outage_env(settings))
    async with BackupLoad(gateway, "pg-stop") as load:
        await load.until(lambda: load.answers["committed"] >= 20)
        pg_cluster.stop("immediate")  # like a crash: recovery at the next start
        _status, body = await eventually(lambda: _unready(gateway, "database"))
        assert body["checks"] == {"broker": "ok", "database": "down", "clock": "ok"}
        # The broker still confirms: Portal gets 2xx ("queued"), durable in the queue.
        queued = load.answers["queued"]
        await load.until(lambda: load.answers["queued"] >= queued + 20)
        await eventually(lambda: "database DOWN" in worker.output())
        pg_cluster.start()
        await eventually(lambda: _ready(gateway))
        before = load.answers["committed"]
        await load.until(lambda: load.answers["committed"] >= before + 20)
    assert set(load.statuses) == {200}, load.statuses
    await assert_nothing_lost(lambda: asyncpg.connect(dsn), Keyring(settings.keyring), load)
    stats = await worker.stop()
    assert "database back after" in worker.output()
    print(f"\ndatabase stop: {stats}; {dict(load.answers)}")
    # Held, not cycled: no message was handed back to the broker and delivered again.
    assert stats["redelivered"] == 0
    assert stats["max_deliveries"] == 1
    assert stats["retried"] == 0
