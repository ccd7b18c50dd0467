"""Real processes and real failures: SIGKILL, poison messages, a database that goes away."""

from __future__ import annotations

import signal
import subprocess
import sys
from collections.abc import AsyncIterator, Callable, Iterator
from typing import IO, Any

import aio_pika
import asyncpg
import pytest
from aiohttp.test_utils import TestClient

from sharevault.broker import Broker
from sharevault.config import Settings
from sharevault.crypto import Identity
from sharevault.service import create_app
from tests.support.environment import AMQP_URL, process_env, secret_headers
from tests.support.inprocess import WorkerHandle
from tests.support.leakcheck import subprocess_log
from tests.support.sharing import publish_junk, publish_share, seal_message
from tests.support.waiting import eventually

pytestmark = pytest.mark.slow


@pytest.fixture
def spawn_worker(settings: Settings) -> Iterator[Callable[[], subprocess.Popen[bytes]]]:
    procs: list[subprocess.Popen[bytes]] = []
    logs: list[IO[bytes]] = []

    def spawn() -> subprocess.Popen[bytes]:
        log = subprocess_log("worker")
        logs.append(log)
        proc = subprocess.Popen(
            [sys.executable, "-m", "sharevault", "work"],
            env=process_env(settings),
            stdout=log,
            stderr=subprocess.STDOUT,
        )
        procs.append(proc)
        return proc

    yield spawn
    for proc in procs:
        if proc.poll() is None:
            proc.kill()
        proc.wait(10)
    for log in logs:
        log.close()


async def backends_waiting_on_lock(db: asyncpg.Connection) -> int:
    return int(
        await db.fetchval(
            "SELECT count(*) FROM pg_stat_activity"
            " WHERE datname = current_database() AND wait_event_type = 'Lock'"
        )
    )


@pytest.fixture
async def table_lock(database_url: str) -> AsyncIterator[asyncpg.Connection]:
    """Holds an EXCLUSIVE lock on shares: inserts block until the test lets go."""
    conn = await asyncpg.connect(database_url)
    tx = conn.transaction()
    await tx.start()
    await conn.execute("LOCK TABLE shares IN EXCLUSIVE MODE")
    yield conn
    if not conn.is_closed():
        await conn.close()


async def test_worker_sigkill_between_publish_and_commit_loses_nothing(
    gateway_factory: Callable[..., Any],
    settings_factory: Callable[..., Settings],
    spawn_worker: Callable[[], subprocess.Popen[bytes]],
    table_lock: asyncpg.Connection,
    db: asyncpg.Connection,
) -> None:
    gateway: TestClient = await gateway_factory(settings_factory(commit_wait=0))  # type: ignore[type-arg]
    first = spawn_worker()
    body = {"clientId": "cl-kill", "backupMethod": "GDRIVE", "share": "survives-sigkill"}
    resp = await gateway.post("/webhook/backup", json=body, headers=secret_headers())
    assert resp.status == 200
    answer = await resp.json()
    assert answer["status"] == "queued"
    # The worker has the message and is inside its transaction, blocked before commit.
    await eventually(lambda: backends_waiting_on_lock(db))
    first.send_signal(signal.SIGKILL)
    first.wait(10)
    await table_lock.close()
    assert await db.fetchval("SELECT count(*) FROM shares") == 0

    second = spawn_worker()
    await eventually(lambda: db.fetchval("SELECT count(*) FROM shares"))
    rows = await db.fetch("SELECT message_id FROM shares WHERE client_id = 'cl-kill'")
    assert [r["message_id"] for r in rows] == [answer["messageId"]]
    fetched = await gateway.post(
        "/webhook/backup/fetch", json={"clientId": "cl-kill"}, headers=secret_headers()
    )
    assert (await fetched.json())["backupShares"] == ["survives-sigkill"]
    second.send_signal(signal.SIGTERM)
    assert second.wait(30) == 0


async def test_poison_messages_go_to_the_dead_letter_queue_with_a_reason(
    worker: WorkerHandle,
    publisher: Broker,
    settings: Settings,
    settings_factory: Callable[..., Settings],
    db: asyncpg.Connection,
) -> None:
    await publish_junk(publisher, "bad-json")
    foreign = settings_factory(encryption_keys="other:" + "Q" * 43 + "=")
    identity = Identity("custodian", "cl-p", "GDRIVE", "")
    await publish_share(publisher, seal_message(foreign, identity, b"x", version=1), timeout=5)
    good = seal_message(settings, identity, b"good", version=2)
    await publish_share(publisher, good, timeout=5)
    await eventually(lambda: worker.acked + worker.dead_lettered >= 3)
    assert worker.dead_lettered == 2
    assert await db.fetchval("SELECT message_id FROM shares") == good.message_id

    reasons: dict[str | None, str] = {}
    conn = await aio_pika.connect(AMQP_URL)
    async with conn:
        channel = await conn.channel()
        queue = await channel.get_queue(publisher.topology.dead)
        for _ in range(2):
            msg = await queue.get(timeout=5)
            assert msg is not None
            reasons[msg.message_id] = str((msg.headers or {}).get("x-sharevault-reason"))
            await msg.ack()
    assert reasons["bad-json"] == "invalid_message"
    assert sorted(reasons.values()) == ["invalid_message", "undecryptable"]


async def test_database_failure_holds_the_batch_and_resumes_without_redelivery(
    gateway_factory: Callable[..., Any],
    settings_factory: Callable[..., Settings],
    worker: WorkerHandle,
    table_lock: asyncpg.Connection,
    db: asyncpg.Connection,
) -> None:
    gateway: TestClient = await gateway_factory(settings_factory(commit_wait=0))  # type: ignore[type-arg]
    body = {"clientId": "cl-hold", "share": "held-not-lost"}
    assert (
        await gateway.post("/webhook/backup", json=body, headers=secret_headers())
    ).status == 200
    # Kill the worker's database session twice while it is blocked: a transient failure.
    for _ in range(2):
        await eventually(lambda: backends_waiting_on_lock(db))
        await db.execute(
            "SELECT pg_terminate_backend(pid) FROM pg_stat_activity"
            " WHERE datname = current_database() AND wait_event_type = 'Lock'"
        )
    await table_lock.close()
    await eventually(lambda: db.fetchval("SELECT count(*) FROM shares"))
    await eventually(lambda: worker.acked == 1)
    assert worker.worker is not None
    assert worker.worker.redelivered == 0, "the batch must be held, not bounced through the broker"
    assert worker.worker.applied == 1


async def test_readyz_and_503_when_broker_or_database_is_down(
    aiohttp_client: Callable[..., Any],
    settings_factory: Callable[..., Settings],
    gateway: TestClient,  # type: ignore[type-arg]
) -> None:
    ok = await gateway.get("/readyz")
    assert ok.status == 200
    assert (await ok.json())["checks"] == {"broker": "ok", "database": "ok", "clock": "ok"}
    assert (await gateway.get("/healthz")).status == 200

    no_broker = await aiohttp_client(
        create_app(settings_factory(amqp_url="amqp://guest:guest@127.0.0.1:1/"))
    )
    ready = await no_broker.get("/readyz")
    assert ready.status == 503
    assert (await ready.json())["checks"]["broker"] == "down"
    resp = await no_broker.post(
        "/webhook/backup", json={"clientId": "c", "share": "s"}, headers=secret_headers()
    )
    assert resp.status == 503
    assert resp.headers["Retry-After"] == "1"
    assert (await resp.json())["error"]["code"] == "broker_unavailable"

    no_db = await aiohttp_client(
        create_app(settings_factory(database_url="postgresql://postgres@127.0.0.1:1/x"))
    )
    ready = await no_db.get("/readyz")
    assert ready.status == 503
    assert (await ready.json())["checks"]["database"] == "down"
    resp = await no_db.post(
        "/webhook/backup/fetch", json={"clientId": "c"}, headers=secret_headers()
    )
    assert resp.status == 503
    assert (await resp.json())["error"]["code"] == "database_unavailable"
