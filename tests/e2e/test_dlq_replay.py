"""Retries with delay, the dead-letter queue and its commands, replay from the ingest journal."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator, Callable
from typing import Any

import aio_pika
import asyncpg
import pytest

from sharevault.broker import Broker
from sharevault.config import Settings
from sharevault.crypto import Identity
from sharevault.messages import DEAD_KEY, SINGLE_CONTENT_TYPE, Envelope
from sharevault.wiring import broker_of
from tests.support.backupload import Client
from tests.support.environment import AMQP_URL, secret_headers
from tests.support.inprocess import WorkerHandle
from tests.support.poison import POISON_TRIGGER, SECRET_SHARE, cli_json
from tests.support.processes import outage_env, run_cli
from tests.support.sharing import publish_junk, publish_share, seal_message
from tests.support.waiting import eventually


@pytest.fixture
async def broker(settings: Settings) -> AsyncIterator[Broker]:
    async with broker_of(settings, name="test") as b:
        await b.wait_ready(10)
        yield b


async def post(gateway: Client, client_id: str, share: str) -> dict[str, Any]:
    body = {"clientId": client_id, "backupMethod": "GDRIVE", "share": share}
    resp = await gateway.post("/webhook/backup", json=body, headers=secret_headers())
    assert resp.status == 200, await resp.text()
    return await resp.json()  # type: ignore[no-any-return]


async def test_poison_goes_down_the_retry_levels_to_the_dlq_and_replays_after_a_fix(
    settings_factory: Callable[..., Settings],
    gateway_factory: Callable[..., Any],
    worker_factory: Callable[..., WorkerHandle],
    db: asyncpg.Connection,
) -> None:
    settings = settings_factory(
        retry_delays="0.2,0.4", retry_max_attempts=3, retry_hold=0, commit_wait=0
    )
    await db.execute(POISON_TRIGGER)
    gateway: Client = await gateway_factory(settings)
    worker = worker_factory(settings)
    async with broker_of(settings, name="test") as broker:
        await broker.wait_ready(10)
        await post(gateway, "ok-1", "fine")
        poisoned = await post(gateway, "poison-1", SECRET_SHARE)
        await eventually(lambda: broker.admin.queue_depth(broker.topology.dead))
        assert await db.fetchval("SELECT count(*) FROM shares WHERE client_id = 'ok-1'") == 1
        assert worker.worker is not None and worker.worker.retried == 2

        listed = await cli_json(settings, "dlq", "list")
        assert (listed["total"], listed["selected"]) == (1, 1)
        assert listed["by_reason"] == {"attempts_exhausted": 1}
        letter = listed["messages"][0]
        assert letter["message_id"] == poisoned["messageId"]
        assert (letter["client_id"], letter["attempts"]) == ("poison-1", 3)
        assert letter["error"] == "database_error:RaiseError"
        assert letter["first_failure"] <= letter["last_failure"] != "-"
        shown = await cli_json(settings, "dlq", "show", poisoned["messageId"])
        assert shown == letter
        other = await cli_json(settings, "dlq", "list", "--client", "someone-else")
        assert (other["total"], other["selected"]) == (1, 0)
        # Listing and showing consumed and re-published: still exactly one dead letter.
        assert await broker.admin.queue_depth(broker.topology.dead) == 1

        await db.execute("DROP TRIGGER poison ON shares")
        code, out, err = await run_cli(
            "dlq", "replay", "--reason", "attempts_exhausted", env=outage_env(settings)
        )
        assert code == 0, err
        assert "replayed 1 of 1" in out
        stored = "SELECT message_id FROM shares WHERE client_id = 'poison-1'"
        assert await eventually(lambda: db.fetchval(stored)) == poisoned["messageId"]
        assert await broker.admin.queue_depth(broker.topology.dead) == 0
    fetched = await gateway.post(
        "/webhook/backup/fetch", json={"clientId": "poison-1"}, headers=secret_headers()
    )
    assert (await fetched.json())["backupShares"] == [SECRET_SHARE]


async def test_a_batch_the_database_keeps_refusing_is_split_and_retried_later(
    settings_factory: Callable[..., Settings],
    gateway_factory: Callable[..., Any],
    worker_factory: Callable[..., WorkerHandle],
    db: asyncpg.Connection,
) -> None:
    # Serialization failures are transient: held first, then (the database answers) retried
    # later, so that the rest of the batch is not blocked behind one hot row.
    settings = settings_factory(
        retry_delays="0.2", retry_max_attempts=100, retry_hold=0.3, commit_wait=0
    )
    await db.execute(POISON_TRIGGER)
    gateway: Client = await gateway_factory(settings)
    worker = worker_factory(settings)
    await post(gateway, "busy-1", "contended")
    await post(gateway, "ok-2", "fine")
    await eventually(lambda: db.fetchval("SELECT count(*) FROM shares WHERE client_id = 'ok-2'"))
    await eventually(lambda: worker.worker is not None and worker.worker.retried >= 2)
    await db.execute("DROP TRIGGER poison ON shares")
    await eventually(lambda: db.fetchval("SELECT count(*) FROM shares WHERE client_id = 'busy-1'"))
    assert worker.dead_lettered == 0


async def crash_consumer_once(queue: str) -> bool:
    """Take one message and die without acking it, as a worker crashing on it would."""
    conn = await aio_pika.connect(AMQP_URL)
    try:
        channel = await conn.channel()
        message = await (await channel.get_queue(queue)).get(no_ack=False, fail=False)
        return message is not None
    finally:
        await conn.close()


async def test_a_message_that_keeps_crashing_workers_is_moved_on_by_the_delivery_limit(
    settings_factory: Callable[..., Settings],
    worker_factory: Callable[..., WorkerHandle],
    db: asyncpg.Connection,
) -> None:
    settings = settings_factory(delivery_limit=1, live_ttl=30)
    async with broker_of(settings, name="test") as broker:
        await broker.wait_ready(10)
        identity = Identity("custodian", "crashy", "GDRIVE", "")
        message = seal_message(settings, identity, b"crashes-workers", version=1)
        await publish_share(broker, message, timeout=5)
        topology = broker.topology
        # Live queue: delivered twice, then the broker moves it to the backlog; same there,
        # then to the DLQ (at-least-once dead-lettering all along).
        for queue in (topology.shares, topology.backlog):
            for _ in range(2):
                assert await eventually(lambda q=queue: crash_consumer_once(q))  # type: ignore[misc]
        await eventually(lambda: broker.admin.queue_depth(topology.dead))
        listed = await cli_json(settings, "dlq", "list")
        assert listed["by_reason"] == {"delivery_limit": 1}
        assert "backlog" in listed["messages"][0]["error"]
    worker = worker_factory(settings)
    code, _out, err = await run_cli("dlq", "replay", env=outage_env(settings))
    assert code == 0, err
    stored = "SELECT message_id FROM shares WHERE client_id = 'crashy'"
    assert await eventually(lambda: db.fetchval(stored)) == message.message_id
    assert worker.dead_lettered == 0


async def test_purge_asks_first_and_filters_by_reason_and_client(
    settings: Settings,
    settings_factory: Callable[..., Settings],
    broker: Broker,
    worker: WorkerHandle,
) -> None:
    foreign = settings_factory(encryption_keys="other:" + "Q" * 43 + "=")
    for client in ("cl-a", "cl-b"):
        identity = Identity("custodian", client, "GDRIVE", "")
        await publish_share(broker, seal_message(foreign, identity, b"x", version=1), timeout=5)
    await publish_junk(broker)
    dead = broker.topology.dead
    await eventually(lambda: _depth_is(broker, dead, 3))
    env = outage_env(settings)

    code, out, _ = await run_cli("dlq", "purge", "--reason", "undecryptable", env=env, stdin="n\n")
    assert code == 1 and "purge 2 dead letters (2 undecryptable)?" in out
    assert await broker.admin.queue_depth(dead) == 3
    code, out, err = await run_cli(
        "dlq", "purge", "--reason", "undecryptable", "--client", "cl-a", env=env, stdin="y\n"
    )
    assert code == 0, err
    assert "purged 1 of 3" in out
    listed = await cli_json(settings, "dlq", "list")
    assert listed["by_reason"] == {"undecryptable": 1, "invalid_message": 1}
    assert [m["client_id"] for m in listed["messages"] if m["reason"] == "undecryptable"] == [
        "cl-b"
    ]
    code, out, err = await run_cli("dlq", "purge", "--yes", env=env)
    assert code == 0, err
    assert "purged 2 of 2" in out
    assert await broker.admin.queue_depth(dead) == 0


async def _depth_is(broker: Broker, queue: str, count: int) -> bool:
    return await broker.admin.queue_depth(queue) == count


async def test_listing_a_large_dlq_loses_nothing_and_one_command_at_a_time(
    settings: Settings, broker: Broker
) -> None:
    headers = {"x-sharevault-reason": "invalid_message", "x-sharevault-attempts": 1}
    await asyncio.gather(
        *(
            broker.publisher.publish(
                Envelope(
                    b"junk",
                    f"junk-{n}",
                    {**headers, "x-sharevault-last-failure": "2020-01-01T00:00:00+00:00"},
                    SINGLE_CONTENT_TYPE,
                ),
                routing_key=DEAD_KEY,
                exchange=broker.topology.recover,
                timeout=10,
            )
            for n in range(600)
        )
    )
    for _ in range(2):
        listed = await cli_json(settings, "dlq", "list", "--limit", "0")
        assert (listed["total"], listed["selected"]) == (600, 600)
        assert await broker.admin.queue_depth(broker.topology.dead) == 600
    recent = await cli_json(settings, "dlq", "list", "--since", "1d")
    assert recent["selected"] == 0
    old = await cli_json(settings, "dlq", "list", "--until", "2020-06-01", "--limit", "3")
    assert old["selected"] == 600 and len(old["messages"]) == 3

    async with broker_of(settings, name="holder", robust=False) as holder:
        await holder.admin.hold_lock(holder.topology.dlq_lock)
        code, _, err = await run_cli("dlq", "list", env=outage_env(settings))
        assert code == 1 and "held by another command" in err
    assert await broker.admin.queue_depth(broker.topology.dead) == 600


async def stored_ids(db: asyncpg.Connection) -> dict[str, str]:
    return {r["client_id"]: r["message_id"] for r in await db.fetch("SELECT * FROM shares")}


async def test_replay_from_the_journal_brings_back_everything_acknowledged(
    settings: Settings,
    gateway: Client,
    worker: WorkerHandle,
    broker: Broker,
    db: asyncpg.Connection,
) -> None:
    for round_ in range(3):
        for n in range(8):
            answer = await post(gateway, f"jr-{n}", f"{SECRET_SHARE}-{n}-{round_}")
            assert answer["status"] == "committed"
    await publish_junk(broker)
    expected = await stored_ids(db)
    assert len(expected) == 8

    # Postgres "restored from an old backup": the rows are gone.
    await db.execute("DELETE FROM shares")
    first = await cli_json(settings, "replay", "--since", "10m")
    assert first == {
        "read": 25,
        "applied": 8,
        "already_current": 16,
        "skipped": 1,
        "not_selected": 0,
    }
    assert await stored_ids(db) == expected
    again = await cli_json(settings, "replay", "--since", "10m")
    assert (again["applied"], again["already_current"]) == (0, 24)
    assert await stored_ids(db) == expected

    await db.execute("DELETE FROM shares WHERE client_id = 'jr-3'")
    one = await cli_json(settings, "replay", "--since", "10m", "--client", "jr-3")
    assert (one["applied"], one["already_current"], one["not_selected"]) == (1, 2, 21)
    old = await cli_json(settings, "replay", "--since", "10m", "--until", "5m")
    assert (old["applied"], old["not_selected"]) == (0, 24)
    assert await stored_ids(db) == expected

    code, out, err = await run_cli("replay", "--since", "1h", env=outage_env(settings))
    assert code == 0, err
    assert "replaying" in err, "a progress bar on stderr"
    assert "0 applied, 24 already current, 1 skipped" in out
