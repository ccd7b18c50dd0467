"""Report-back to Portal through the outbox: once per stored share, retried, and never lost."""

from __future__ import annotations

import asyncio
import signal
import subprocess
import sys
import time
from collections.abc import Awaitable, Callable, Iterator
from pathlib import Path
from typing import Any

import asyncpg
import pytest
from aiohttp import web
from aiohttp.test_utils import TestClient
from prometheus_client import REGISTRY

from sharevault.broker import Broker
from sharevault.config import Settings
from sharevault.crypto import Identity, Keyring
from sharevault.messages import ShareMessage, bearer_identity
from sharevault.portal import REPORT_V1, REPORT_V2, REPORT_V3
from tests.support import FakePortal
from tests.support.inprocess import WorkerHandle
from tests.support.leakcheck import subprocess_log
from tests.support.portal_fixtures import (
    CLIENT_A,
    CLIENT_B,
    TOKEN_A,
    TOKEN_B,
    bearer,
    portal_settings,
    worker_env,
)
from tests.support.sharing import publish_share
from tests.support.waiting import eventually

Gateway = TestClient[web.Request, web.Application]
GatewayFactory = Callable[..., Awaitable[Gateway]]


async def post(
    gw: Gateway, body: dict[str, Any], client: str = CLIENT_A, token: str = TOKEN_A
) -> str:
    resp = await gw.post(f"/portal/clients/{client}/backup", json=body, headers=bearer(token))
    assert resp.status == 200, await resp.text()
    answer = await resp.json()
    assert answer["status"] == "committed"
    return str(answer["messageId"])


def reports_counted(outcome: str) -> float:
    """sharevault_outbox_reports_total{outcome} of this process (the worker runs in it)."""
    value = REGISTRY.get_sample_value("sharevault_outbox_reports_total", {"outcome": outcome})
    return value or 0.0


async def outbox(db: asyncpg.Connection) -> list[dict[str, Any]]:
    rows = await db.fetch("SELECT * FROM outbox ORDER BY id")
    return [dict(r) for r in rows]


async def settled(db: asyncpg.Connection, count: int) -> list[dict[str, Any]]:
    """Wait until `count` rows have left 'pending'."""

    async def done() -> list[dict[str, Any]] | None:
        rows = await outbox(db)
        finished = [r for r in rows if r["status"] != "pending"]
        return rows if len(finished) >= count else None

    result: list[dict[str, Any]] = await eventually(done)
    return result


@pytest.fixture
def fast(settings_factory: Callable[..., Settings], fake_portal: FakePortal) -> Settings:
    return portal_settings(settings_factory, fake_portal)


async def test_each_stored_share_is_reported_exactly_once(
    gateway_factory: GatewayFactory,
    worker_factory: Callable[..., WorkerHandle],
    fast: Settings,
    fake_portal: FakePortal,
    publisher: Broker,
    db: asyncpg.Connection,
) -> None:
    worker = worker_factory(fast)
    gw = await gateway_factory(fast)
    with_pair = await post(
        gw, {"cipherText": "a", "backupMethod": "GDRIVE", "backupSharePairId": "p1"}
    )
    without = await post(gw, {"backupShare": "b", "backupMethod": "PASSKEY"}, CLIENT_B, TOKEN_B)
    rows = await settled(db, 2)
    assert [(r["message_id"], r["report_api"], r["status"]) for r in rows] == [
        (with_pair, "v3", "sent"),
        (without, "v2", "sent"),
    ]
    assert all(r["bearer_sealed"] is None and r["attempts"] == 1 for r in rows)
    v3, v2 = sorted(fake_portal.reports(), key=lambda c: c.path, reverse=True)
    assert (v3.path, v3.client_id, v3.body["backupSharePairIds"]) == (REPORT_V3, CLIENT_A, ["p1"])
    assert (v2.path, v2.client_id, v2.body["backupMethod"]) == (REPORT_V2, CLIENT_B, "PASSKEY")

    # The same message delivered twice, and an older one after it: one row, one report.
    identity = Identity("client", CLIENT_A, "ICLOUD", "p2")
    keyring = Keyring(fast.keyring)

    def sealed(message_id: str, version: int) -> ShareMessage:
        return ShareMessage.build(
            message_id=message_id,
            version=version,
            identity=identity,
            sealed=keyring.seal(b"dup", identity, version, message_id),
            report_api="v3",
            bearer_sealed=keyring.seal(
                TOKEN_A.encode(), bearer_identity(identity), version, message_id
            ),
        )

    message, older = sealed("dup-1", time.time_ns() // 1000), sealed("old-1", 1)
    # One at a time, so that each is its own batch (in one batch the newest alone is chosen).
    for msg in (message, message, older):
        await publish_and_wait(publisher, worker, msg)
    await settled(db, 3)
    await eventually(lambda: len(fake_portal.reports()) >= 3)
    assert [r["message_id"] for r in await outbox(db)] == [with_pair, without, "dup-1"]
    await _quiet(fast)
    assert len(fake_portal.reports(ok_only=False)) == 3


async def publish_and_wait(publisher: Broker, worker: WorkerHandle, msg: ShareMessage) -> None:
    acked = worker.acked
    await publish_share(publisher, msg, timeout=5)
    await eventually(lambda: worker.acked > acked)


async def _quiet(settings: Settings) -> None:
    """Let several poll rounds pass, so that a second report would have been sent."""
    await asyncio.sleep(settings.outbox_poll_interval * 6)


async def test_a_share_without_method_is_reported_without_one(
    gateway_factory: GatewayFactory,
    worker_factory: Callable[..., WorkerHandle],
    fast: Settings,
    fake_portal: FakePortal,
    db: asyncpg.Connection,
) -> None:
    """The seed app's body (no method, no pair): reported as its storedClientBackupShare(true)."""
    worker_factory(fast)
    gw = await gateway_factory(fast)
    sent_before = reports_counted("sent")
    await post(gw, {"backupShare": "seed"})  # Portal's doc shape: no method, no pair id
    pair_only = {"cipherText": "ex", "backupMethod": "", "backupSharePairId": "p9"}
    await post(gw, pair_only, CLIENT_B, TOKEN_B)
    rows = await settled(db, 2)
    assert [r["status"] for r in rows] == ["sent", "sent"]
    calls = {c.path: c for c in fake_portal.reports(ok_only=False)}
    assert set(calls) == {REPORT_V1, REPORT_V3}
    assert (calls[REPORT_V1].client_id, calls[REPORT_V1].body) == (CLIENT_A, {"success": True})
    assert calls[REPORT_V3].body["backupSharePairIds"] == ["p9"]
    assert all("UNKNOWN" not in str(c.body) for c in fake_portal.calls)
    assert reports_counted("sent") - sent_before == 2


async def test_report_api_setting(
    gateway_factory: GatewayFactory,
    worker_factory: Callable[..., WorkerHandle],
    settings_factory: Callable[..., Settings],
    fake_portal: FakePortal,
    db: asyncpg.Connection,
) -> None:
    worker_factory(portal_settings(settings_factory, fake_portal))
    v2 = await gateway_factory(
        portal_settings(settings_factory, fake_portal, portal_report_api="v2")
    )
    off = await gateway_factory(
        portal_settings(settings_factory, fake_portal, portal_report_api="off")
    )
    body = {"cipherText": "x", "backupMethod": "GDRIVE", "backupSharePairId": "p1"}
    reported = await post(v2, body)
    await post(off, {**body, "backupSharePairId": "p2"})
    [row] = await settled(db, 1)
    assert (row["message_id"], row["report_api"], row["status"]) == (reported, "v2", "sent")
    [call] = fake_portal.reports()
    assert call.body == {"success": True, "backupMethod": "GDRIVE"}


async def test_429_retry_after_is_honoured(
    gateway_factory: GatewayFactory,
    worker_factory: Callable[..., WorkerHandle],
    fast: Settings,
    fake_portal: FakePortal,
    db: asyncpg.Connection,
) -> None:
    worker_factory(fast)
    gw = await gateway_factory(fast)
    fake_portal.fail(429, times=1, retry_after=1, path=REPORT_V3)
    await post(gw, {"cipherText": "x", "backupSharePairId": "p1"})
    [row] = await settled(db, 1)
    assert (row["status"], row["attempts"], row["last_status"]) == ("sent", 2, 200)
    first, second = fake_portal.calls_to(REPORT_V3)
    assert (first.status, second.status) == (429, 200)
    # Not before Portal said; backoff alone never waits this long here (OUTBOX_BACKOFF_MAX 0.3 s).
    assert second.at - first.at >= 1.0


async def test_permanent_refusal_is_failed_not_retried(
    gateway_factory: GatewayFactory,
    worker_factory: Callable[..., WorkerHandle],
    fast: Settings,
    fake_portal: FakePortal,
    db: asyncpg.Connection,
) -> None:
    worker_factory(fast)
    gw = await gateway_factory(fast)
    fake_portal.fail(401, path=REPORT_V2)  # e.g. the session token expired meanwhile
    await post(gw, {"cipherText": "x", "backupMethod": "GDRIVE"})
    [row] = await settled(db, 1)
    assert (row["status"], row["attempts"], row["last_status"]) == ("failed", 1, 401)
    assert row["bearer_sealed"] is None and row["finished_at"] is not None
    assert "HTTP 401" in row["last_error"] and TOKEN_A not in row["last_error"]
    assert reports_counted("failed") >= 1
    await _quiet(fast)
    assert len(fake_portal.calls_to(REPORT_V2)) == 1


async def test_gives_up_after_the_horizon_and_says_so(
    gateway_factory: GatewayFactory,
    worker_factory: Callable[..., WorkerHandle],
    settings_factory: Callable[..., Settings],
    fake_portal: FakePortal,
    db: asyncpg.Connection,
) -> None:
    settings = portal_settings(settings_factory, fake_portal, outbox_horizon=0.5)
    worker_factory(settings)
    gw = await gateway_factory(settings)
    fake_portal.fail(503, path=REPORT_V3)
    expired_before = reports_counted("expired")
    await post(gw, {"cipherText": "x", "backupSharePairId": "p1"})
    [row] = await settled(db, 1)
    assert row["status"] == "expired" and row["bearer_sealed"] is None
    assert reports_counted("expired") - expired_before == 1
    assert row["attempts"] >= 2 and row["last_status"] == 503
    assert "gave up after" in row["last_error"] and "HTTP 503" in row["last_error"]
    calls = len(fake_portal.calls_to(REPORT_V3))
    await _quiet(settings)
    assert len(fake_portal.calls_to(REPORT_V3)) == calls


async def test_portal_down_shares_still_stored_reports_follow_its_return(
    gateway_factory: GatewayFactory,
    worker_factory: Callable[..., WorkerHandle],
    fast: Settings,
    fake_portal: FakePortal,
    db: asyncpg.Connection,
) -> None:
    worker_factory(fast)
    gw = await gateway_factory(fast)
    # Proven once while Portal is up; the verdict cache carries the gateway through the outage.
    assert (
        await gw.get(f"/portal/clients/{CLIENT_A}/backup", headers=bearer(TOKEN_A))
    ).status == 404
    fake_portal.fail(503)
    pairs = ["p1", "p2", "p3"]
    for pair in pairs:
        await post(gw, {"cipherText": f"share-{pair}", "backupSharePairId": pair})
    assert await db.fetchval("SELECT count(*) FROM shares") == 3

    async def all_tried() -> bool:
        return all(r["attempts"] >= 2 and r["status"] == "pending" for r in await outbox(db))

    await eventually(all_tried)
    assert fake_portal.reports() == []
    fake_portal.heal()
    rows = await settled(db, 3)
    assert {r["status"] for r in rows} == {"sent"}
    await _quiet(fast)
    reported = sorted(c.body["backupSharePairIds"][0] for c in fake_portal.reports())
    assert reported == pairs


@pytest.fixture
def spawn_worker(fast: Settings) -> Iterator[Callable[[], tuple[subprocess.Popen[bytes], Path]]]:
    procs: list[subprocess.Popen[bytes]] = []

    def spawn() -> tuple[subprocess.Popen[bytes], Path]:
        log = subprocess_log("report-worker")
        proc = subprocess.Popen(
            [sys.executable, "-m", "sharevault", "work"],
            env=worker_env(fast),
            stdout=log,
            stderr=subprocess.STDOUT,
        )
        log.close()
        procs.append(proc)
        return proc, Path(log.name)

    yield spawn
    for proc in procs:
        if proc.poll() is None:
            proc.kill()
        proc.wait(10)


@pytest.mark.slow
async def test_worker_sigkill_between_commit_and_report_reports_exactly_once(
    gateway_factory: GatewayFactory,
    spawn_worker: Callable[[], tuple[subprocess.Popen[bytes], Path]],
    fast: Settings,
    fake_portal: FakePortal,
    db: asyncpg.Connection,
) -> None:
    gw = await gateway_factory(fast)
    assert (
        await gw.get(f"/portal/clients/{CLIENT_A}/backup", headers=bearer(TOKEN_A))
    ).status == 404
    first, first_log = spawn_worker()
    fake_portal.delay = 60.0  # Portal hangs: the report is in flight when the worker dies
    share = "cipher-text-of-the-killed-worker-" + "k" * 40
    message_id = await post(gw, {"cipherText": share, "backupSharePairId": "p-kill"})
    await eventually(lambda: REPORT_V3 in fake_portal.arrivals)
    first.send_signal(signal.SIGKILL)
    first.wait(10)
    # The share is committed; its report is still owed, leased to the dead worker for OUTBOX_LEASE.
    assert await db.fetchval("SELECT count(*) FROM shares") == 1
    [row] = await outbox(db)
    assert (row["message_id"], row["status"], row["attempts"]) == (message_id, "pending", 0)
    assert row["bearer_sealed"] is not None

    fake_portal.delay = 0.0  # Portal is fast again; the abandoned request still hangs
    second, second_log = spawn_worker()  # it takes the row when the dead worker's lease runs out
    [row] = await settled(db, 1)
    assert (row["status"], row["attempts"], row["bearer_sealed"]) == ("sent", 1, None)
    await _quiet(fast)
    [report] = fake_portal.reports()
    assert report.body["backupSharePairIds"] == ["p-kill"]
    # Release the abandoned request: its answer never reached anyone.
    fake_portal.heal()
    await eventually(lambda: len(fake_portal.calls_to(REPORT_V3)) == 2)
    assert [c.delivered for c in fake_portal.calls_to(REPORT_V3)] == [True, False]
    assert len(fake_portal.reports()) == 1
    second.send_signal(signal.SIGTERM)
    assert second.wait(30) == 0
    assert f"reported message {message_id}" in second_log.read_text()
    for log in (first_log, second_log):
        text = log.read_text(errors="replace")
        assert TOKEN_A not in text and share not in text


async def test_the_request_id_reaches_portal_with_the_report(
    gateway_factory: GatewayFactory,
    worker_factory: Callable[..., WorkerHandle],
    fast: Settings,
    fake_portal: FakePortal,
    db: asyncpg.Connection,
) -> None:
    worker_factory(fast)
    gw = await gateway_factory(fast)
    headers = bearer(TOKEN_A) | {"X-Request-Id": "app-request-7f3a"}
    body = {"cipherText": "c", "backupMethod": "GDRIVE", "backupSharePairId": "p-rid"}
    resp = await gw.post(f"/portal/clients/{CLIENT_A}/backup", json=body, headers=headers)
    assert resp.status == 200
    [row] = await settled(db, 1)
    assert row["request_id"] == "app-request-7f3a"
    [report] = fake_portal.reports()
    assert report.request_id == "app-request-7f3a"
