"""Client backup shares over HTTP → RabbitMQ → worker → PostgreSQL, proven against a fake Portal."""

from __future__ import annotations

import json
import logging
from collections.abc import Awaitable, Callable
from typing import Any

import asyncpg
import pytest
from aiohttp import web
from aiohttp.test_utils import TestClient
from pydantic import SecretStr

from sharevault.config import Settings
from sharevault.portal import WHOAMI
from sharevault.service import create_app
from sharevault.service.appkeys import BROKER, CLIENT_AUTH
from sharevault.service.errors import ApiError
from tests.support import FakePortal, GatewayDriver
from tests.support.environment import SAMPLES, WEBHOOK_SECRET, secret_headers
from tests.support.inprocess import WorkerHandle
from tests.support.portal_fixtures import (
    CLIENT_A,
    CLIENT_B,
    TOKEN_A,
    TOKEN_B,
    bearer,
    portal_settings,
)
from tests.support.waiting import eventually

Gateway = TestClient[web.Request, web.Application]


@pytest.fixture
async def client_gateway(
    gateway_factory: Callable[..., Awaitable[Gateway]],
    settings_factory: Callable[..., Settings],
    fake_portal: FakePortal,
    worker_factory: Callable[..., WorkerHandle],
) -> Gateway:
    settings = portal_settings(settings_factory, fake_portal)
    worker_factory(settings)
    return await gateway_factory(settings)


def path(client_id: str) -> str:
    return f"/portal/clients/{client_id}/backup"


async def post(gw: Gateway, client_id: str, body: dict[str, Any], token: str = TOKEN_A) -> Any:
    return await gw.post(path(client_id), json=body, headers=bearer(token))


async def get(gw: Gateway, client_id: str, token: str = TOKEN_A, **query: str) -> Any:
    return await gw.get(path(client_id), params=query, headers=bearer(token))


async def cipher_text(gw: Gateway, client_id: str, token: str = TOKEN_A, **query: str) -> str:
    resp = await get(gw, client_id, token, **query)
    assert resp.status == 200, await resp.text()
    return str((await resp.json())["cipherText"])


async def test_all_three_body_shapes_are_stored_and_read_back(
    client_gateway: Gateway, db: asyncpg.Connection
) -> None:
    seed = json.loads((SAMPLES / "client-backup-seed.json").read_text())
    portalex = json.loads((SAMPLES / "client-backup-portalex.json").read_text())
    bodies = [
        seed,
        {"data": {"backupShare": "axios-shape"}, "backupMethod": "ICLOUD"},
        portalex,
    ]
    for body in bodies:
        resp = await post(client_gateway, CLIENT_A, body)
        assert resp.status == 200, await resp.text()
        answer = await resp.json()
        assert answer["status"] == "committed" and len(answer["messageId"]) == 32
    assert await cipher_text(client_gateway, CLIENT_A) == seed["backupShare"]
    assert await cipher_text(client_gateway, CLIENT_A, backupMethod="ICLOUD") == "axios-shape"
    by_pair = await cipher_text(
        client_gateway, CLIENT_A, backupSharePairId=portalex["backupSharePairId"]
    )
    assert by_pair == portalex["cipherText"]
    rows = await db.fetch("SELECT kind, backup_method, pair_id FROM shares ORDER BY version")
    assert [tuple(r) for r in rows] == [
        ("client", "UNKNOWN", ""),
        ("client", "ICLOUD", ""),
        ("client", "GDRIVE", portalex["backupSharePairId"]),
    ]
    # Sealed at rest, like every share.
    sealed = await db.fetchval("SELECT sealed FROM shares WHERE backup_method = 'ICLOUD'")
    assert b"axios-shape" not in sealed


async def test_lookup_prefers_pair_then_method_then_unknown(client_gateway: Gateway) -> None:
    writes = [
        {"cipherText": "g1", "backupMethod": "GDRIVE", "backupSharePairId": "p1"},
        {"cipherText": "g2", "backupMethod": "GDRIVE", "backupSharePairId": "p2"},
        {"cipherText": "pk", "backupMethod": "PASSKEY", "backupSharePairId": "p3"},
    ]
    for body in writes:
        assert (await post(client_gateway, CLIENT_A, body)).status == 200
    # Without a legacy (UNKNOWN) share there is no fallback: 404 as JSON.
    missing = await get(client_gateway, CLIENT_A, backupMethod="ICLOUD")
    assert missing.status == 404
    assert (await missing.json())["error"]["code"] == "not_found"
    assert (await post(client_gateway, CLIENT_A, {"backupShare": "legacy"})).status == 200

    assert await cipher_text(client_gateway, CLIENT_A, backupSharePairId="p1") == "g1"
    assert await cipher_text(client_gateway, CLIENT_A, backupMethod="PASSKEY") == "pk"
    # The pair id wins over the method; the newest of a method wins.
    assert (
        await cipher_text(client_gateway, CLIENT_A, backupMethod="PASSKEY", backupSharePairId="p1")
        == "g1"
    )
    assert await cipher_text(client_gateway, CLIENT_A, backupMethod="GDRIVE") == "g2"
    # Unknown pair, unknown method, nothing given: the legacy share.
    assert await cipher_text(client_gateway, CLIENT_A, backupSharePairId="p9") == "legacy"
    assert await cipher_text(client_gateway, CLIENT_A, backupMethod="ICLOUD") == "legacy"
    assert await cipher_text(client_gateway, CLIENT_A) == "legacy"
    # A newer write of the same identity replaces the older one.
    body = {"cipherText": "g1-new", "backupMethod": "GDRIVE", "backupSharePairId": "p1"}
    assert (await post(client_gateway, CLIENT_A, body)).status == 200
    assert await cipher_text(client_gateway, CLIENT_A, backupSharePairId="p1") == "g1-new"


async def test_client_and_custodian_shares_of_one_pair_never_mix(client_gateway: Gateway) -> None:
    identity = {"backupMethod": "GDRIVE", "backupSharePairId": "p1"}
    assert (
        await post(client_gateway, CLIENT_A, {**identity, "cipherText": "client"})
    ).status == 200
    webhook = {**identity, "clientId": CLIENT_A, "share": "custodian"}
    resp = await client_gateway.post("/webhook/backup", json=webhook, headers=secret_headers())
    assert resp.status == 200
    assert await cipher_text(client_gateway, CLIENT_A, backupSharePairId="p1") == "client"
    fetched = await client_gateway.post(
        "/webhook/backup/fetch", json={"clientId": CLIENT_A}, headers=secret_headers()
    )
    assert (await fetched.json())["backupShares"] == ["custodian"]


async def test_a_client_can_neither_write_nor_read_another_clients_share(
    client_gateway: Gateway, db: asyncpg.Connection
) -> None:
    assert (await post(client_gateway, CLIENT_B, {"cipherText": "b-secret"}, TOKEN_B)).status == 200
    before = await db.fetchval("SELECT count(*) FROM shares")

    write = await post(client_gateway, CLIENT_B, {"cipherText": "overwrite"}, TOKEN_A)
    assert write.status == 403
    assert (await write.json())["error"]["code"] == "forbidden"
    read = await get(client_gateway, CLIENT_B, TOKEN_A)
    assert read.status == 403
    assert "b-secret" not in await read.text()

    for headers in ({}, {"Authorization": "Basic abc"}, {"Authorization": "Bearer "}):
        resp = await client_gateway.get(path(CLIENT_B), headers=headers)
        assert resp.status == 401
        assert resp.headers["WWW-Authenticate"].startswith("Bearer")
    forged = await post(client_gateway, CLIENT_B, {"cipherText": "x"}, "forged-token")
    assert forged.status == 401
    assert "invalid_token" in forged.headers["WWW-Authenticate"]
    bad_id = await client_gateway.get("/portal/clients/a%20b/backup", headers=bearer(TOKEN_A))
    assert bad_id.status == 422
    assert await db.fetchval("SELECT count(*) FROM shares") == before
    assert await cipher_text(client_gateway, CLIENT_B, TOKEN_B) == "b-secret"


async def test_portal_unreachable_is_503_not_401(
    gateway_factory: Callable[..., Awaitable[Gateway]],
    settings_factory: Callable[..., Settings],
    fake_portal: FakePortal,
) -> None:
    gw = await gateway_factory(portal_settings(settings_factory, fake_portal))
    fake_portal.fail(503, path=WHOAMI)
    resp = await post(gw, CLIENT_A, {"cipherText": "x"})
    assert resp.status == 503
    assert resp.headers["Retry-After"] == "1"
    assert (await resp.json())["error"]["code"] == "portal_unavailable"
    fake_portal.heal()
    fake_portal.fail(429, retry_after=9, path=WHOAMI)
    limited = await get(gw, CLIENT_A)
    assert (limited.status, limited.headers["Retry-After"]) == (503, "9")
    await fake_portal.close()
    assert (await get(gw, CLIENT_A)).status == 503


async def test_verdicts_are_cached(client_gateway: Gateway, fake_portal: FakePortal) -> None:
    for _ in range(3):
        assert (await get(client_gateway, CLIENT_A)).status == 404
    assert (await get(client_gateway, CLIENT_B, TOKEN_A)).status == 403
    assert len(fake_portal.calls_to(WHOAMI)) == 1


class HeaderAuth:
    """An operator's own session check: trusts X-Test-Client and reports nothing to Portal."""

    async def authenticate(self, request: web.Request, client_id: str) -> SecretStr | None:
        if request.headers.get("X-Test-Client") != client_id:
            raise ApiError(403, "forbidden", "not you")
        return None


async def test_the_authenticator_can_be_swapped(
    aiohttp_client: Callable[..., Awaitable[Gateway]],
    settings_factory: Callable[..., Settings],
    fake_portal: FakePortal,
    worker_factory: Callable[..., WorkerHandle],
    db: asyncpg.Connection,
) -> None:
    settings = portal_settings(settings_factory, fake_portal)
    app = create_app(settings)
    app[CLIENT_AUTH] = HeaderAuth()
    gw = await aiohttp_client(app)
    await gw.app[BROKER].wait_ready(10)
    worker_factory(settings)
    resp = await gw.post(
        path("cl-op"), json={"cipherText": "x"}, headers={"X-Test-Client": "cl-op"}
    )
    assert resp.status == 200
    assert (await gw.get(path("cl-op"), headers={"X-Test-Client": "other"})).status == 403
    assert fake_portal.calls == []
    # No Portal bearer, so nothing to report with: no outbox row.
    assert await db.fetchval("SELECT count(*) FROM outbox") == 0


async def test_no_token_or_cipher_text_in_any_log(
    client_gateway: Gateway, fake_portal: FakePortal, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.DEBUG)
    share = "cipher-text-that-must-never-be-logged-" + "x" * 64
    body = {"cipherText": share, "backupMethod": "GDRIVE", "backupSharePairId": "p-log"}
    assert (await post(client_gateway, CLIENT_A, body)).status == 200
    assert await cipher_text(client_gateway, CLIENT_A, backupSharePairId="p-log") == share
    assert (await post(client_gateway, CLIENT_B, {"cipherText": share}, TOKEN_A)).status == 403
    fake_portal.fail(503, path=WHOAMI)
    assert (await get(client_gateway, CLIENT_A, "never-proven-token-123456")).status == 503
    await _wait_reported(fake_portal)
    assert caplog.records, "the flow logs something; it must just not be secret"
    logged = caplog.text + "".join(str(r.__dict__) for r in caplog.records)
    for secret in (share, TOKEN_A, TOKEN_B, "never-proven-token-123456"):
        assert secret not in logged


async def _wait_reported(fake: FakePortal) -> None:
    await eventually(lambda: fake.reports())


async def test_the_driver_acts_as_portal_and_as_an_app(client_gateway: Gateway) -> None:
    base = str(client_gateway.make_url(""))
    async with GatewayDriver(base, webhook_secret=WEBHOOK_SECRET) as driver:
        trip = await driver.backup_and_verify(CLIENT_A, "custodian-share", method="GDRIVE")
        assert (trip.ok, trip.problem, trip.stored) == (True, None, "committed")
        assert trip.backup_seconds > 0 and trip.fetch_seconds > 0
        stored = await driver.client_backup(
            CLIENT_A, TOKEN_A, {"cipherText": "c", "backupSharePairId": "p"}
        )
        assert (stored.status, stored.body["status"]) == (200, "committed")
        got = await driver.client_get(CLIENT_A, TOKEN_A, pair_id="p")
        assert (got.status, got.body) == (200, {"cipherText": "c"})
        refused = await driver.client_get(CLIENT_A, TOKEN_B)
        assert refused.status == 403
    async with GatewayDriver(base, webhook_secret="wrong-secret-000000000") as impostor:
        trip = await impostor.backup_and_verify(CLIENT_A, "nope")
        assert (trip.ok, trip.problem) == (False, "/backup answered 401")
