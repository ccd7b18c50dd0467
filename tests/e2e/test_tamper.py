"""Issue 14.5-14.7 against the real broker and database: forged messages published straight to
the queues are dead-lettered `tampered` and roll nothing back; a share that does not open is an
error, never an omission; legacy seals open only while accepted; a gateway whose clock is off
PostgreSQL's turns unready and refuses writes."""

from __future__ import annotations

import base64
import logging
import time
import uuid
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from typing import Any

import asyncpg
import pytest
from aiohttp import web
from aiohttp.test_utils import TestClient
from prometheus_client import REGISTRY

from sharevault.broker import Broker
from sharevault.clock import VersionClock
from sharevault.config import Settings
from sharevault.crypto import Identity
from sharevault.messages import ShareMessage
from sharevault.service import create_app
from sharevault.service.appkeys import BROKER, CLOCK
from tests.support import FakePortal
from tests.support.environment import KEY_A, secret_headers
from tests.support.inprocess import WorkerHandle
from tests.support.leakcheck import sensitive
from tests.support.poison import cli_json
from tests.support.portal_fixtures import CLIENT_A, TOKEN_A, bearer, portal_settings
from tests.support.sharing import legacy_seal, publish_share, seal_message
from tests.support.waiting import eventually

Gateway = TestClient[web.Request, web.Application]


WORKER = "tamper-share-secret-never-logged-"
sensitive(WORKER)
FLIP_LAST_BYTE = (
    "UPDATE shares SET sealed = set_byte(sealed, length(sealed) - 1,"
    " get_byte(sealed, length(sealed) - 1) # 1) WHERE client_id = $1"
)


async def post(gateway: Gateway, client_id: str, share: str) -> Any:
    body = {"clientId": client_id, "backupMethod": "GDRIVE", "share": share}
    return await gateway.post("/webhook/backup", json=body, headers=secret_headers())


async def stored(gateway: Gateway, client_id: str, share: str) -> dict[str, Any]:
    resp = await post(gateway, client_id, share)
    assert resp.status == 200, await resp.text()
    answer: dict[str, Any] = await resp.json()
    assert answer["status"] == "committed"
    return answer


async def fetch(gateway: Gateway, client_id: str) -> Any:
    return await gateway.post(
        "/webhook/backup/fetch", json={"clientId": client_id}, headers=secret_headers()
    )


async def shares_of(gateway: Gateway, client_id: str) -> list[str]:
    resp = await fetch(gateway, client_id)
    assert resp.status == 200, await resp.text()
    return list((await resp.json())["backupShares"])


async def row_of(db: asyncpg.Connection, client_id: str) -> asyncpg.Record:
    row = await db.fetchrow("SELECT * FROM shares WHERE client_id = $1", client_id)
    assert row is not None
    return row


async def dead_lettered(worker: WorkerHandle, count: int) -> None:
    await eventually(lambda: worker.dead_lettered >= count)


def identity_of(client_id: str) -> Identity:
    return Identity("custodian", client_id, "GDRIVE", "")


def forge(
    client_id: str, sealed: bytes, version: int, message_id: str | None = None
) -> ShareMessage:
    """A message as anyone who can publish to the broker can make one: any seal, any claim."""
    return ShareMessage.build(
        message_id=message_id or uuid.uuid4().hex,
        version=version,
        identity=identity_of(client_id),
        sealed=sealed,
    )


@dataclass
class Scene:
    """A gateway and a worker on one topology, a publisher beside them, the database."""

    gateway: Gateway
    worker: WorkerHandle
    publisher: Broker
    settings: Settings
    db: asyncpg.Connection


@pytest.fixture
def scene(
    gateway: Gateway,
    worker: WorkerHandle,
    publisher: Broker,
    settings: Settings,
    db: asyncpg.Connection,
) -> Scene:
    return Scene(gateway, worker, publisher, settings, db)


async def refused_as_tampered(scene: Scene, client_id: str, forged: list[ShareMessage]) -> None:
    """Publish forged messages straight to the live queue: each is dead-lettered `tampered` and
    the stored row stays exactly as it was."""
    before = await row_of(scene.db, client_id)
    for message in forged:
        await publish_share(scene.publisher, message)
    await dead_lettered(scene.worker, len(forged))
    assert tuple(await row_of(scene.db, client_id)) == tuple(before)
    listed = await cli_json(scene.settings, "dlq", "list")
    assert listed["by_reason"] == {"tampered": len(forged)}
    assert {m["message_id"] for m in listed["messages"]} == {m.message_id for m in forged}


async def test_an_old_share_republished_as_new_is_dead_lettered_and_rolls_nothing_back(
    scene: Scene,
) -> None:
    client_id = "cl-rollback"
    await stored(scene.gateway, client_id, WORKER + "old")
    # What the journal holds of the first message: its seal, byte for byte.
    old = await row_of(scene.db, client_id)
    await stored(scene.gateway, client_id, WORKER + "new")
    now = time.time_ns() // 1000
    forged = [
        # The old seal under a newer version and a new message id, as a replay would be.
        forge(client_id, old["sealed"], now),
        # Its own message id kept, only the version raised.
        forge(client_id, old["sealed"], now, old["message_id"]),
    ]
    await refused_as_tampered(scene, client_id, forged)
    assert await shares_of(scene.gateway, client_id) == [WORKER + "new"]


async def test_a_version_from_the_future_is_dead_lettered_and_later_backups_still_win(
    scene: Scene,
) -> None:
    client_id = "cl-future"
    await stored(scene.gateway, client_id, WORKER + "1")
    sealed = (await row_of(scene.db, client_id))["sealed"]
    identity = identity_of(client_id)
    # Sealed for 2^62 by someone holding the key (or a gateway whose clock is wild), and an old
    # seal merely claiming 2^62: both would silently drop every later backup if stored.
    sealed_far = seal_message(scene.settings, identity, (WORKER + "far").encode(), version=2**62)
    await refused_as_tampered(scene, client_id, [sealed_far, forge(client_id, sealed, 2**62)])
    await stored(scene.gateway, client_id, WORKER + "2")
    assert await shares_of(scene.gateway, client_id) == [WORKER + "2"]
    assert (await row_of(scene.db, client_id))["version"] < 2**62


async def test_a_damaged_row_answers_500_undecryptable_on_fetch_and_client_get(
    gateway_factory: Callable[..., Awaitable[Gateway]],
    worker_factory: Callable[..., WorkerHandle],
    settings_factory: Callable[..., Settings],
    fake_portal: FakePortal,
    db: asyncpg.Connection,
    caplog: pytest.LogCaptureFixture,
) -> None:
    settings = portal_settings(settings_factory, fake_portal, portal_report_api="off")
    worker_factory(settings)
    gateway = await gateway_factory(settings)
    custodian = await stored(gateway, "cl-damaged", WORKER + "custodian")
    resp = await gateway.post(
        f"/portal/clients/{CLIENT_A}/backup",
        json={"backupShare": WORKER + "client", "backupMethod": "GDRIVE"},
        headers=bearer(TOKEN_A),
    )
    assert resp.status == 200, await resp.text()
    client = await resp.json()
    await db.execute(FLIP_LAST_BYTE, "cl-damaged")
    await db.execute(FLIP_LAST_BYTE, CLIENT_A)

    failures = REGISTRY.get_sample_value("sharevault_decrypt_failures_total") or 0.0
    with caplog.at_level(logging.ERROR):
        resp = await fetch(gateway, "cl-damaged")
        assert resp.status == 500
        assert await resp.json() == {
            "error": {
                "code": "undecryptable",
                "message": "a stored share failed to authenticate and is not served;"
                " operators are alerted",
            }
        }
        resp = await gateway.get(
            f"/portal/clients/{CLIENT_A}/backup",
            params={"backupMethod": "GDRIVE"},
            headers=bearer(TOKEN_A),
        )
        assert resp.status == 500
        assert (await resp.json())["error"]["code"] == "undecryptable"
    assert REGISTRY.get_sample_value("sharevault_decrypt_failures_total") == failures + 2
    lines = [r.getMessage() for r in caplog.records if "does not open" in r.getMessage()]
    assert len(lines) == 2
    assert custodian["messageId"] in lines[0] and client["messageId"] in lines[1]
    assert not any(WORKER in line for line in lines)


async def test_legacy_seals_open_while_accepted_and_are_refused_once_turned_off(
    gateway_factory: Callable[..., Awaitable[Gateway]],
    worker_factory: Callable[..., WorkerHandle],
    settings_factory: Callable[..., Settings],
    publisher: Broker,
    db: asyncpg.Connection,
) -> None:
    lenient = settings_factory()
    strict = settings_factory(accept_legacy_seals=False)

    def legacy_message(client_id: str) -> ShareMessage:
        """Queued by a gateway before the upgrade: a legacy seal under key ka."""
        share = (WORKER + client_id).encode()
        sealed = legacy_seal("ka", base64.b64decode(KEY_A), share, identity_of(client_id))
        return forge(client_id, sealed, time.time_ns() // 1000)

    worker = worker_factory(lenient)
    await publish_share(publisher, legacy_message("cl-legacy"))
    await eventually(lambda: worker.acked >= 1)
    assert (await row_of(db, "cl-legacy"))["key_id"] == "ka"
    assert await shares_of(await gateway_factory(lenient), "cl-legacy") == [WORKER + "cl-legacy"]
    # Turned off: the legacy row is an error, not served (nor hidden) ...
    resp = await fetch(await gateway_factory(strict), "cl-legacy")
    assert resp.status == 500 and (await resp.json())["error"]["code"] == "undecryptable"
    await worker.close()
    # ... and a legacy-sealed message is dead-lettered `tampered`, never stored.
    refusing = worker_factory(strict)
    await publish_share(publisher, legacy_message("cl-legacy-late"))
    await dead_lettered(refusing, 1)
    assert await db.fetchval("SELECT count(*) FROM shares WHERE client_id = 'cl-legacy-late'") == 0
    assert (await cli_json(strict, "dlq", "list"))["by_reason"] == {"tampered": 1}


async def test_a_gateway_whose_clock_is_off_turns_unready_and_refuses_writes_until_it_is_back(
    aiohttp_client: Callable[..., Awaitable[Gateway]],
    settings_factory: Callable[..., Settings],
    worker: WorkerHandle,
    db: asyncpg.Connection,
) -> None:
    settings = settings_factory(clock_check_interval=0.1)
    healthy = create_app(settings)
    gateway = await aiohttp_client(healthy)
    await gateway.app[BROKER].wait_ready(10)
    await stored(gateway, "cl-clock", "before")
    await gateway.close()

    offset = [-2.0]  # behind PostgreSQL (and so behind every gateway in time)
    app = create_app(settings)
    app[CLOCK] = VersionClock(lambda: time.time_ns() + int(offset[0] * 1e9))
    skewed = await aiohttp_client(app)
    await skewed.app[BROKER].wait_ready(10)
    ready = await skewed.get("/readyz")
    assert ready.status == 503
    body = await ready.json()
    assert body["checks"] == {"broker": "ok", "database": "ok", "clock": "down"}
    assert body["down"]["clock"].startswith("clock_skew: ")
    assert -2.2 < body["clock_offset_seconds"] < -1.8
    assert REGISTRY.get_sample_value("sharevault_clock_skewed") == 1
    resp = await post(skewed, "cl-clock", "from-the-past")
    assert resp.status == 503
    assert resp.headers["Retry-After"] == "1"
    assert (await resp.json())["error"]["code"] == "clock_skew"
    # Reads still work; nothing was written.
    assert await shares_of(skewed, "cl-clock") == ["before"]
    assert await db.fetchval("SELECT count(*) FROM shares WHERE client_id = 'cl-clock'") == 1

    offset[0] = 0.0  # time sync repaired: ready again (the step is seen at once)
    await eventually(lambda: _ready(skewed))
    await eventually(lambda: REGISTRY.get_sample_value("sharevault_clock_skewed") == 0)
    await stored(skewed, "cl-clock", "after")
    assert await shares_of(skewed, "cl-clock") == ["after"]
    offset[0] = 1.0  # stepped ahead between two checks: refused at once
    resp = await post(skewed, "cl-clock", "from-the-future")
    assert resp.status == 503 and (await resp.json())["error"]["code"] == "clock_skew"


async def _ready(gateway: Gateway) -> bool:
    return (await gateway.get("/readyz")).status == 200
