"""Bounds per client over HTTP → RabbitMQ → worker → PostgreSQL: pairs pruned on re-backup, a new
method beyond the cap refused by the worker's statement, parked, and answered 409 by the gateway
waiting for it."""

from __future__ import annotations

from collections.abc import Awaitable, Callable
from typing import Any

import asyncpg
from aiohttp import web
from aiohttp.test_utils import TestClient

from sharevault.broker import Broker
from sharevault.config import Settings
from sharevault.crypto import Identity
from tests.support.environment import secret_headers
from tests.support.inprocess import WorkerHandle
from tests.support.sharing import publish_share, seal_message
from tests.support.waiting import eventually

Gateway = TestClient[web.Request, web.Application]


async def backup(gw: Gateway, method: str, pair: str, share: str) -> Any:
    body = {"clientId": "cl-b", "backupMethod": method, "backupSharePairId": pair, "share": share}
    return await gw.post("/webhook/backup", json=body, headers=secret_headers())


async def test_re_backups_keep_the_newest_pairs_and_new_methods_stop_at_the_cap(
    settings_factory: Callable[..., Settings],
    gateway_factory: Callable[..., Awaitable[Gateway]],
    worker_factory: Callable[..., WorkerHandle],
    db: asyncpg.Connection,
) -> None:
    settings = settings_factory(pairs_per_method=2, methods_per_client=3)
    worker = worker_factory(settings)
    gw = await gateway_factory(settings)
    for n in range(6):
        resp = await backup(gw, "GDRIVE", f"p{n}", f"gdrive-{n}")
        assert resp.status == 200 and (await resp.json())["status"] == "committed"
    for method in ("ICLOUD", "PASSKEY"):
        assert (await backup(gw, method, "p0", method.lower())).status == 200
    refused = await backup(gw, "PASSWORD", "p0", "password")
    assert refused.status == 409
    assert (await refused.json())["error"]["code"] == "too_many_methods"

    async def parked() -> bool:
        return worker.dead_lettered == 1

    await eventually(parked, timeout=10)
    assert (await backup(gw, "GDRIVE", "p6", "gdrive-6")).status == 200  # a known method goes on

    resp = await gw.post(
        "/webhook/backup/fetch", json={"clientId": "cl-b"}, headers=secret_headers()
    )
    answer = await resp.json()
    assert answer["backupShares"] == ["gdrive-6", "passkey", "icloud", "gdrive-5"]
    rows = await db.fetch("SELECT backup_method, pair_id FROM shares ORDER BY version")
    assert [(r["backup_method"], r["pair_id"]) for r in rows] == [
        ("GDRIVE", "p5"),
        ("ICLOUD", "p0"),
        ("PASSKEY", "p0"),
        ("GDRIVE", "p6"),
    ]


async def test_the_worker_parks_a_method_beyond_the_cap_that_got_past_the_gateway(
    settings_factory: Callable[..., Settings],
    worker_factory: Callable[..., WorkerHandle],
    publisher: Broker,
    db: asyncpg.Connection,
) -> None:
    # Straight onto the queue: no gateway waits for these; the refused one is parked all the same.
    settings = settings_factory(methods_per_client=2)
    worker = worker_factory(settings)
    version = 1_000
    for method in ("A", "B", "C"):
        version += 1
        identity = Identity("custodian", "cl-w", method, "p")
        await publish_share(publisher, seal_message(settings, identity, b"s", version))
    keep = Identity("custodian", "cl-w", "A", "q")
    await publish_share(publisher, seal_message(settings, keep, b"s", version + 1))

    async def settled() -> bool:
        return worker.acked + worker.dead_lettered == 4

    await eventually(settled, timeout=30)
    assert worker.dead_lettered == 1
    rows = await db.fetch(
        "SELECT backup_method, pair_id FROM shares ORDER BY backup_method, pair_id"
    )
    assert [(r["backup_method"], r["pair_id"]) for r in rows] == [
        ("A", "p"),
        ("A", "q"),
        ("B", "p"),
    ]
