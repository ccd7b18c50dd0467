"""Shares accepted together travel as one broker message; each is stored, parked or retried
alone."""

from __future__ import annotations

import asyncio
from collections.abc import Callable
from typing import Any

import aio_pika
import asyncpg
import msgpack

from sharevault.broker import Broker
from sharevault.config import Settings
from sharevault.crypto import Identity
from sharevault.messages import (
    BATCH_CONTENT_TYPE,
    SHARE_KEY,
    SHARES_HEADER,
    SINGLE_CONTENT_TYPE,
    Envelope,
    ShareMessage,
    encode_batch,
)
from sharevault.service.publishing import Coalescer, Coalescing, Route
from sharevault.wiring import broker_of
from tests.support.backupload import Client
from tests.support.environment import AMQP_URL, secret_headers
from tests.support.inprocess import WorkerHandle
from tests.support.poison import POISON_TRIGGER, cli_json
from tests.support.sharing import seal_message
from tests.support.waiting import eventually

# Long enough that shares published together on this machine always share a message.
LINGER_MS = "300"


async def ready_messages(broker: Broker) -> int:
    topology = broker.topology
    return await broker.admin.queue_depth(topology.shares) + await broker.admin.queue_depth(
        topology.backlog
    )


async def dead_letters(
    broker: Broker, count: int
) -> dict[str, aio_pika.abc.AbstractIncomingMessage]:
    """Take `count` messages off the DLQ, by message id."""
    taken: dict[str, aio_pika.abc.AbstractIncomingMessage] = {}
    conn = await aio_pika.connect(AMQP_URL)
    async with conn:
        queue = await (await conn.channel()).get_queue(broker.topology.dead)
        for _ in range(count):
            msg = await queue.get(timeout=5)
            assert msg is not None
            await msg.ack()
            taken[msg.message_id or ""] = msg
    return taken


async def test_shares_published_together_travel_as_one_message_and_each_is_stored(
    settings_factory: Callable[..., Settings],
    worker_factory: Callable[..., WorkerHandle],
    db: asyncpg.Connection,
) -> None:
    settings = settings_factory(publish_linger_ms=LINGER_MS, publish_batch=8)
    messages = [
        seal_message(settings, Identity("custodian", f"co-{n}", "GDRIVE", ""), b"s%d" % n, n + 1)
        for n in range(12)
    ]
    async with broker_of(settings, name="test") as broker:
        await broker.wait_ready(10)
        # Each publish returns only with the confirm of the message carrying its share.
        shares = Coalescer(
            broker.publisher,
            Route(broker.admin, broker.topology.shares),
            Coalescing(linger=int(LINGER_MS) / 1000, max_shares=8),
        )
        await asyncio.gather(*(shares.publish(m, timeout=5) for m in messages))
        # 12 shares, at most 8 to a message: two messages (no worker yet).
        assert await ready_messages(broker) == 2
        worker = worker_factory(settings)
        await eventually(lambda: worker.acked >= 12)
        assert await ready_messages(broker) == 0
    stored = await db.fetch("SELECT client_id, message_id FROM shares ORDER BY client_id")
    assert {(r["client_id"], r["message_id"]) for r in stored} == {
        (m.client_id, m.message_id) for m in messages
    }
    assert worker.dead_lettered == 0


async def test_a_bad_share_of_a_batch_is_parked_alone_and_the_others_are_stored(
    settings: Settings,
    settings_factory: Callable[..., Settings],
    worker: WorkerHandle,
    publisher: Broker,
    db: asyncpg.Connection,
) -> None:
    foreign = settings_factory(encryption_keys="other:" + "Q" * 43 + "=")
    good = [
        seal_message(settings, Identity("custodian", f"ok-{n}", "GDRIVE", ""), b"fine", 1)
        for n in range(2)
    ]
    undecryptable = seal_message(foreign, Identity("custodian", "cl-x", "GDRIVE", ""), b"x", 1)
    invalid = {"message_id": "bad-share", "version": "not a number", "client_id": "cl-y"}
    body = encode_batch(
        [
            good[0].encode(),
            undecryptable.encode(),
            msgpack.packb(invalid),
            good[1].model_copy(update={"context": {"x-request-id": "req-good-1"}}).encode(),
        ]
    )
    batch = Envelope(body, "batch-1", {SHARES_HEADER: 4}, BATCH_CONTENT_TYPE)
    await publisher.publisher.publish(batch, routing_key=SHARE_KEY, timeout=5)
    await eventually(lambda: worker.acked + worker.dead_lettered >= 4)
    assert (worker.acked, worker.dead_lettered) == (2, 2)
    stored = await db.fetch("SELECT message_id FROM shares ORDER BY client_id")
    assert [r["message_id"] for r in stored] == [m.message_id for m in good]

    parked = await dead_letters(publisher, 2)
    assert set(parked) == {undecryptable.message_id, "bad-share"}
    assert parked[undecryptable.message_id].headers["x-sharevault-reason"] == "undecryptable"
    assert parked["bad-share"].headers["x-sharevault-reason"] == "invalid_message"
    # Parked alone, as single-share messages: the DLQ tools and a replay see one share each.
    alone = ShareMessage.model_validate(msgpack.unpackb(parked[undecryptable.message_id].body))
    assert alone.message_id == undecryptable.message_id
    assert parked[undecryptable.message_id].content_type == SINGLE_CONTENT_TYPE
    assert parked["bad-share"].content_type == SINGLE_CONTENT_TYPE
    assert SHARES_HEADER not in (parked["bad-share"].headers or {})


async def test_a_share_the_database_refuses_leaves_its_batch_for_the_retry_levels(
    settings_factory: Callable[..., Settings],
    gateway_factory: Callable[..., Any],
    worker_factory: Callable[..., WorkerHandle],
    db: asyncpg.Connection,
) -> None:
    settings = settings_factory(
        retry_delays="0.2",
        retry_max_attempts=2,
        retry_hold=0,
        commit_wait=0,
        publish_linger_ms=LINGER_MS,
    )
    await db.execute(POISON_TRIGGER)
    gateway: Client = await gateway_factory(settings)
    worker = worker_factory(settings)

    async def post(client_id: str) -> dict[str, Any]:
        body = {"clientId": client_id, "backupMethod": "GDRIVE", "share": f"share-{client_id}"}
        resp = await gateway.post(
            "/webhook/backup", json=body, headers={**secret_headers(), "X-Request-Id": client_id}
        )
        assert resp.status == 200
        return await resp.json()  # type: ignore[no-any-return]

    answers = await asyncio.gather(post("ok-a"), post("poison-b"), post("ok-c"))
    ids = {
        client: a["messageId"]
        for client, a in zip(("ok-a", "poison-b", "ok-c"), answers, strict=True)
    }
    await eventually(lambda: worker.dead_lettered >= 1)
    stored = await db.fetch("SELECT client_id, message_id FROM shares ORDER BY client_id")
    assert [(r["client_id"], r["message_id"]) for r in stored] == [
        ("ok-a", ids["ok-a"]),
        ("ok-c", ids["ok-c"]),
    ]
    assert worker.worker is not None and worker.worker.retried == 1
    # The refused share went through the retry level alone and was parked with its own story.
    listed = await cli_json(settings, "dlq", "list")
    assert listed["total"] == 1
    letter = listed["messages"][0]
    assert (letter["message_id"], letter["client_id"]) == (ids["poison-b"], "poison-b")
    assert (letter["reason"], letter["attempts"], letter["shares"]) == ("attempts_exhausted", 2, 1)
