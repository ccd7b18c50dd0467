"""HTTP → RabbitMQ → worker → Postgres → HTTP, for Portal's custodian webhooks."""

from __future__ import annotations

import json
from typing import Any

import asyncpg
from aiohttp.test_utils import TestClient

from tests.conftest import PREVIOUS_SECRET, SAMPLES, WorkerHandle, secret_headers


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


async def test_previous_secret_still_accepted(
    gateway: TestClient,  # type: ignore[type-arg]
    worker: WorkerHandle,
) -> None:
    body = sample("webhook-backup-1.json")
    await post_backup(gateway, body, secret=PREVIOUS_SECRET)


async def test_unknown_client_gets_empty_list(gateway: TestClient) -> None:  # type: ignore[type-arg]
    assert await fetch(gateway, "cl-nobody") == {"backupShares": []}
