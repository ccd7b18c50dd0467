"""The security matrix of the webhook surface: secrets, rotation, address allowlist."""

from __future__ import annotations

import asyncio
import hmac
import json
from collections.abc import Callable
from typing import Any

import pytest
from aiohttp import ClientSession

from sharevault.config import Settings
from sharevault.service.auth import secret_matches
from tests.support.environment import PREVIOUS_SECRET, WEBHOOK_SECRET, secret_headers
from tests.support.inprocess import WorkerHandle
from tests.support.leakcheck import sensitive

BODY = {"clientId": "cl-sec", "backupMethod": "GDRIVE", "share": "s"}


@pytest.mark.parametrize(
    "allowed, trusted, xff, status",
    [
        ("127.0.0.1/32", "", None, 200),
        ("35.203.150.117,104.155.171.139,35.185.20.23", "", None, 403),
        # Forwarded-For is only believed from a trusted proxy.
        ("35.203.150.117", "", "35.203.150.117", 403),
        ("35.203.150.117", "127.0.0.1/32", "35.203.150.117", 200),
        ("35.203.150.117", "127.0.0.1/32", "6.6.6.6", 403),
    ],
)
async def test_address_allowlist(
    gateway_factory: Callable[..., Any],
    settings_factory: Callable[..., Settings],
    worker: WorkerHandle,
    allowed: str,
    trusted: str,
    xff: str | None,
    status: int,
) -> None:
    gateway = await gateway_factory(settings_factory(allowed_ips=allowed, trusted_proxies=trusted))
    headers = secret_headers() | ({"X-Forwarded-For": xff} if xff else {})
    for path, body in (("/webhook/backup", BODY), ("/webhook/backup/fetch", {"clientId": "c"})):
        resp = await gateway.post(path, json=body, headers=headers)
        assert resp.status == status, await resp.text()
        if status == 403:
            assert (await resp.json())["error"]["code"] == "forbidden_address"
    # Health stays reachable for the orchestrator whatever the allowlist says.
    assert (await gateway.get("/healthz")).status == 200


async def test_secret_rotation_accepts_current_and_previous_only(
    gateway_factory: Callable[..., Any],
    settings_factory: Callable[..., Settings],
    worker: WorkerHandle,
) -> None:
    rotated = settings_factory(
        webhook_secret="brand-new-secret-value-42", webhook_secret_previous=WEBHOOK_SECRET
    )
    gateway = await gateway_factory(rotated)
    for secret, status in (
        ("brand-new-secret-value-42", 200),
        (WEBHOOK_SECRET, 200),
        (PREVIOUS_SECRET, 401),
    ):
        resp = await gateway.post("/webhook/backup", json=BODY, headers=secret_headers(secret))
        assert resp.status == status


def test_secret_comparison_is_constant_time_and_checks_every_secret(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    calls: list[tuple[bytes, bytes]] = []
    real = hmac.compare_digest

    def spy(a: bytes, b: bytes) -> bool:
        calls.append((a, b))
        return real(a, b)

    monkeypatch.setattr(hmac, "compare_digest", spy)
    assert secret_matches(b"one", [b"one", b"two"]) is True
    assert secret_matches(b"nope", [b"one", b"two"]) is False
    # Both secrets compared every time, through hmac.compare_digest, whatever matched first.
    assert calls == [(b"one", b"one"), (b"one", b"two"), (b"nope", b"one"), (b"nope", b"two")]


async def raw_request(url: str, data: bytes) -> bytes:
    host, port = url.removeprefix("http://").split(":")
    reader, writer = await asyncio.open_connection(host, int(port))
    writer.write(data)
    await writer.drain()
    answer = await reader.read(65536)
    writer.close()
    return answer


@pytest.mark.parametrize(
    "head",
    [
        # A header line over aiohttp's limit, holding something secret-looking.
        "POST /webhook/backup HTTP/1.1\r\nHost: x\r\nAuthorization: Bearer {big}\r\n",
        # A request line over the limit.
        "POST /webhook/backup?{big} HTTP/1.1\r\nHost: x\r\n",
        # Garbage instead of HTTP.
        "\x16\x03\x01 not http {big}\r\n",
    ],
)
async def test_malformed_http_gets_json_and_echoes_nothing(live_gateway: str, head: str) -> None:
    big = "tok" + "Q" * 20_000
    sensitive(big[:64])  # nor may any of it reach a log line (tests/support/leakcheck.py)
    answer = await raw_request(live_gateway, (head.format(big=big) + "\r\n").encode())
    status_line, _, rest = answer.partition(b"\r\n")
    assert status_line.split()[1] == b"400"
    headers, _, body = rest.partition(b"\r\n\r\n")
    assert b"application/json" in headers
    assert json.loads(body)["error"]["code"] == "bad_request"
    assert b"QQQQ" not in answer
    # The gateway still serves the next caller.
    async with ClientSession() as session, session.get(f"{live_gateway}/healthz") as resp:
        assert resp.status == 200
