"""HTTP → RabbitMQ → worker → Postgres → HTTP, for Portal's custodian webhooks."""

from __future__ import annotations

import asyncio
import json
import logging
import uuid
from collections.abc import Callable
from typing import Any

import asyncpg
import pytest
from aiohttp.test_utils import TestClient

from sharevault.broker import Broker
from sharevault.config import Settings
from sharevault.crypto import Identity, Keyring
from sharevault.messages import ShareMessage
from tests.support.environment import PREVIOUS_SECRET, SAMPLES, WEBHOOK_SECRET, secret_headers
from tests.support.inprocess import WorkerHandle
from tests.support.sharing import publish_share, seal_message
from tests.support.waiting import eventually


def sample(name: str) -> dict[str, Any]:
    return json.loads((SAMPLES / name).read_text())  # type: ignore[no-any-return]


async def post_backup(gateway: TestClient, body: dict[str, Any], **kw: Any) -> Any:  # type: ignore[type-arg]
    resp = await gateway.post("/webhook/backup", json=body, headers=secret_headers(**kw))
    assert resp.status == 200, await resp.text()
    return await resp.json()


async def fetch(gateway: TestClient, client_id: str) -> dict[str, Any]:  # type: ignore[type-arg]
    resp = await gateway.post(
        "/webhook/backup/fetch", json={"clientId": client_id}, headers=secret_headers()
    )
    assert resp.status == 200
    return await resp.json()  # type: ignore[no-any-return]


async def test_backup_then_fetch_returns_share_byte_for_byte(
    gateway: TestClient,  # type: ignore[type-arg]
    worker: WorkerHandle,
) -> None:
    body = sample("webhook-backup-1.json")
    answer = await post_backup(gateway, body)
    assert answer["status"] == "committed"
    got = await fetch(gateway, body["clientId"])
    assert got == {"backupShares": [body["share"]], "backupShare": body["share"]}


async def test_every_sample_shape_is_stored(
    gateway: TestClient,  # type: ignore[type-arg]
    worker: WorkerHandle,
    db: asyncpg.Connection,
) -> None:
    for name in ("webhook-backup-2.json", "webhook-backup-3.json"):
        body = sample(name)
        await post_backup(gateway, body)
        assert (await fetch(gateway, body["clientId"]))["backupShares"] == [body["share"]]
    legacy = sample("webhook-backup-legacy-object.json")
    await post_backup(gateway, legacy)
    got = await fetch(gateway, legacy["clientId"])
    # Stored as its JSON text, which parses back to the very object Portal sent.
    assert len(got["backupShares"]) == 1
    assert json.loads(got["backupShares"][0]) == legacy["share"]
    row = await db.fetchrow(
        "SELECT backup_method, pair_id FROM shares WHERE client_id = $1", legacy["clientId"]
    )
    assert row is not None
    assert (row["backup_method"], row["pair_id"]) == ("UNKNOWN", "")
    # PortalEx reads the method with `||`: "" is no method, stored as the legacy share is.
    blank = {**sample("webhook-backup-2.json"), "clientId": "cl-blank", "backupMethod": ""}
    await post_backup(gateway, blank)
    assert (await fetch(gateway, "cl-blank"))["backupShares"] == [blank["share"]]
    method = await db.fetchval("SELECT backup_method FROM shares WHERE client_id = 'cl-blank'")
    assert method == "UNKNOWN"


async def test_previous_secret_still_accepted(
    gateway: TestClient,  # type: ignore[type-arg]
    worker: WorkerHandle,
) -> None:
    body = sample("webhook-backup-1.json")
    await post_backup(gateway, body, secret=PREVIOUS_SECRET)


async def test_unknown_client_gets_empty_list(gateway: TestClient) -> None:  # type: ignore[type-arg]
    assert await fetch(gateway, "cl-nobody") == {"backupShares": []}


async def test_newer_share_overwrites_and_an_older_message_never_does(
    gateway: TestClient,  # type: ignore[type-arg]
    worker: WorkerHandle,
    publisher: Broker,
    settings: Settings,
    db: asyncpg.Connection,
) -> None:
    first = {"clientId": "cl-v", "backupMethod": "GDRIVE", "backupSharePairId": "p", "share": "one"}
    await post_backup(gateway, first)
    await post_backup(gateway, {**first, "share": "two"})
    assert (await fetch(gateway, "cl-v"))["backupShares"] == ["two"]
    # A retry or replay of something older arrives late: it must not win.
    identity = Identity("custodian", "cl-v", "GDRIVE", "p")
    stale = seal_message(settings, identity, b"stale", version=1)
    await publish_share(publisher, stale, timeout=5)
    await eventually(lambda: worker.acked >= 3)
    assert (await fetch(gateway, "cl-v"))["backupShares"] == ["two"]
    assert await db.fetchval("SELECT count(*) FROM shares WHERE client_id = 'cl-v'") == 1


async def test_shares_are_encrypted_at_rest_and_bound_to_their_client(
    gateway: TestClient,  # type: ignore[type-arg]
    worker: WorkerHandle,
    db: asyncpg.Connection,
    caplog: pytest.LogCaptureFixture,
) -> None:
    body = sample("webhook-backup-1.json")
    await post_backup(gateway, body)
    sealed = await db.fetchval("SELECT sealed FROM shares WHERE client_id = $1", body["clientId"])
    share = body["share"].encode()
    assert share not in sealed
    assert share[:32] not in sealed and share[-32:] not in sealed
    dump = await db.fetchval("SELECT string_agg(t::text, '') FROM shares t")
    assert body["share"][:40] not in dump
    # Someone copies the row onto another client: it must not decrypt, must not be served, and
    # must not pass for "no share" either.
    await db.execute(
        "INSERT INTO shares (kind, client_id, backup_method, pair_id, sealed, key_id, version,"
        " message_id) SELECT kind, 'cl-thief', backup_method, pair_id, sealed, key_id, version,"
        " message_id FROM shares WHERE client_id = $1",
        body["clientId"],
    )
    with caplog.at_level(logging.ERROR):
        resp = await gateway.post(
            "/webhook/backup/fetch", json={"clientId": "cl-thief"}, headers=secret_headers()
        )
        assert resp.status == 500
        assert (await resp.json())["error"]["code"] == "undecryptable"
    assert any("does not open" in r.getMessage() for r in caplog.records)


async def test_no_share_or_secret_in_any_log_line(
    gateway: TestClient,  # type: ignore[type-arg]
    worker: WorkerHandle,
    caplog: pytest.LogCaptureFixture,
) -> None:
    caplog.set_level(logging.DEBUG)
    bodies = [sample(n) for n in ("webhook-backup-1.json", "webhook-backup-legacy-object.json")]
    for body in bodies:
        await post_backup(gateway, body)
        await fetch(gateway, body["clientId"])
    await gateway.post(
        "/webhook/backup", json={"clientId": 1, "share": "leak-me-please"}, headers=secret_headers()
    )
    await gateway.post(
        "/webhook/backup", json=bodies[0], headers={"X-Webhook-Secret": "guess-" + WEBHOOK_SECRET}
    )
    assert caplog.records, "the flow should have logged something at DEBUG"
    text = "\n".join(r.getMessage() + str(r.args) + str(r.exc_text) for r in caplog.records)
    needles = [WEBHOOK_SECRET, "leak-me-please", bodies[0]["share"][:64]]
    needles += [json.dumps(bodies[1]["share"], separators=(",", ":"))[:64]]
    for needle in needles:
        assert needle not in text


async def test_read_your_writes_while_a_flood_drains(
    gateway: TestClient,  # type: ignore[type-arg]
    worker: WorkerHandle,
    publisher: Broker,
    settings: Settings,
) -> None:
    async def flood() -> None:
        ring = Keyring(settings.keyring)
        sem = asyncio.Semaphore(64)

        async def one(i: int) -> None:
            identity = Identity("custodian", f"cl-flood-{i % 500}", "GDRIVE", str(i))
            message_id = uuid.uuid4().hex
            msg = ShareMessage.build(
                message_id=message_id,
                version=i + 1,
                identity=identity,
                sealed=ring.seal(b"f", identity, i + 1, message_id),
            )
            async with sem:
                await publish_share(publisher, msg, timeout=10)

        await asyncio.gather(*(one(i) for i in range(5000)))

    flooding = asyncio.create_task(flood())
    base = {"clientId": "cl-ryw", "backupMethod": "PASSWORD", "backupSharePairId": "p"}
    for i in range(200):
        share = f"share-{i}-" + uuid.uuid4().hex
        await post_backup(gateway, {**base, "share": share})
        got = await fetch(gateway, "cl-ryw")
        assert got["backupShares"] == [share], f"pair {i} read a stale share"
    await flooding


async def test_two_workers_store_each_message_once(
    gateway: TestClient,  # type: ignore[type-arg]
    worker_factory: Callable[..., WorkerHandle],
    settings_factory: Callable[..., Settings],
    db: asyncpg.Connection,
) -> None:
    small = settings_factory(worker_prefetch=16, worker_batch_size=8)
    workers = [worker_factory(small), worker_factory(small)]
    bodies = [
        {
            "clientId": f"cl-{i % 50}",
            "backupMethod": "GDRIVE",
            "backupSharePairId": f"p{i}",
            "share": f"s{i}",
        }
        for i in range(400)
    ]
    sem = asyncio.Semaphore(32)

    async def send(body: dict[str, Any]) -> None:
        async with sem:
            await post_backup(gateway, body)

    await asyncio.gather(*(send(b) for b in bodies))
    assert await db.fetchval("SELECT count(*) FROM shares") == 400
    for w in workers:
        await w.close()
    # Every message acked exactly once across both workers, and each one applied.
    assert sum(w.acked for w in workers) == 400
    assert sum(w.worker.applied for w in workers if w.worker) == 400
    assert all(w.acked > 0 for w in workers), "both workers should have taken messages"
