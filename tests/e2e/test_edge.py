"""Slow and greedy callers (issue 14): header and body deadlines, connection and in-flight caps,
rate limits per client and per failing address, X-Forwarded-For from every line, and secrets
whose bytes are not UTF-8. Raw sockets against the gateway's own runner (server.py)."""

from __future__ import annotations

import asyncio
import json
import time
from collections.abc import AsyncIterator, Awaitable, Callable
from typing import Any

import pytest
from aiohttp import web
from aiohttp.test_utils import TestClient, TestServer, make_mocked_request
from multidict import CIMultiDict

from sharevault.config import ConfigError, Settings, load_settings
from sharevault.service.app import create_app
from sharevault.service.appkeys import BROKER, SETTINGS
from sharevault.service.ipfilter import caller_address
from sharevault.service.server import GatewayRunner
from tests.support.environment import WEBHOOK_SECRET, secret_headers

Gateway = TestClient[web.Request, web.Application]


class _GatewayServer(TestServer):
    """The test server, run by the gateway's own runner (deadlines, connection cap)."""

    async def _make_runner(self, **kwargs: Any) -> web.BaseRunner:
        return GatewayRunner(self.app, **kwargs)


@pytest.fixture
async def edge_gateway(
    aiohttp_client: Callable[..., Awaitable[Gateway]],
) -> AsyncIterator[Callable[[Settings], Awaitable[Gateway]]]:
    async def make(settings: Settings) -> Gateway:
        client = await aiohttp_client(_GatewayServer(create_app(settings)))
        await client.app[BROKER].wait_ready(10)
        return client

    yield make


async def _open(client: Gateway) -> tuple[asyncio.StreamReader, asyncio.StreamWriter]:
    assert client.server.port is not None
    return await asyncio.open_connection("127.0.0.1", client.server.port)


async def _closed_within(reader: asyncio.StreamReader, seconds: float) -> bytes:
    """Everything the server sent until it closed the connection (fails past `seconds`)."""
    async with asyncio.timeout(seconds):
        return await reader.read()


def _status_and_body(raw: bytes) -> tuple[int, dict[str, str], dict[str, Any]]:
    head, _, body = raw.partition(b"\r\n\r\n")
    lines = head.decode("latin-1").split("\r\n")
    headers = dict(line.split(": ", 1) for line in lines[1:])
    return int(lines[0].split()[1]), headers, json.loads(body)


def _backup_head(length: int, secret: bytes = WEBHOOK_SECRET.encode()) -> bytes:
    return (
        b"POST /webhook/backup HTTP/1.1\r\nHost: gateway\r\nContent-Type: application/json\r\n"
        b"X-Webhook-Secret: "
        + secret
        + b"\r\nContent-Length: "
        + str(length).encode()
        + b"\r\n\r\n"
    )


async def test_headers_that_trickle_in_are_cut_off_at_the_idle_timeout(
    edge_gateway: Callable[[Settings], Awaitable[Gateway]],
    settings_factory: Callable[..., Settings],
) -> None:
    client = await edge_gateway(settings_factory(idle_timeout=1.0))
    reader, writer = await _open(client)
    started = time.monotonic()
    writer.write(b"POST /webhook/backup HTTP/1.1\r\nHost: gateway\r\n")

    async def trickle() -> None:
        for _ in range(40):  # one byte of header every 0.2 s: 8 s if nobody stops it
            await asyncio.sleep(0.2)
            writer.write(b"X")
            await writer.drain()

    trickling = asyncio.create_task(trickle())
    try:
        sent = await _closed_within(reader, 5)
    finally:
        trickling.cancel()
        writer.close()
    assert sent == b"", "no answer to half a request: the connection just closes"
    assert time.monotonic() - started < 3


async def test_an_idle_keep_alive_connection_is_closed(
    edge_gateway: Callable[[Settings], Awaitable[Gateway]],
    settings_factory: Callable[..., Settings],
) -> None:
    client = await edge_gateway(settings_factory(idle_timeout=1.0))
    reader, writer = await _open(client)
    writer.write(b"GET /healthz HTTP/1.1\r\nHost: gateway\r\n\r\n")
    first = await reader.readuntil(b"\r\n\r\n")
    assert first.startswith(b"HTTP/1.1 200")
    await _closed_within(reader, 4)  # the rest of the answer, then the close
    writer.close()


async def test_a_body_slower_than_its_deadline_gets_408_and_the_connection_closes(
    edge_gateway: Callable[[Settings], Awaitable[Gateway]],
    settings_factory: Callable[..., Settings],
) -> None:
    client = await edge_gateway(settings_factory(body_timeout=1.0, idle_timeout=30.0))
    reader, writer = await _open(client)
    started = time.monotonic()
    writer.write(_backup_head(1000) + b'{"clientId": "slow-body", ')
    raw = await _closed_within(reader, 5)
    writer.close()
    status, headers, body = _status_and_body(raw)
    assert status == 408 and body["error"]["code"] == "body_timeout"
    assert headers.get("Connection") == "close"
    assert time.monotonic() - started < 3


async def test_a_connection_beyond_the_cap_gets_503_at_once(
    edge_gateway: Callable[[Settings], Awaitable[Gateway]],
    settings_factory: Callable[..., Settings],
) -> None:
    client = await edge_gateway(settings_factory(max_connections=2, idle_timeout=30.0))
    held = [await _open(client) for _ in range(2)]
    await asyncio.sleep(0.2)
    reader, writer = await _open(client)
    raw = await _closed_within(reader, 2)  # answered without sending a byte
    writer.close()
    status, headers, body = _status_and_body(raw)
    assert status == 503 and headers["Retry-After"] == "1"
    assert body["error"]["code"] == "overloaded"
    for _, w in held:
        w.close()
    # Once they are gone, connections are served again.
    await asyncio.sleep(0.2)
    assert (await client.get("/healthz")).status == 200


async def test_requests_beyond_the_in_flight_cap_get_503_at_once(
    edge_gateway: Callable[[Settings], Awaitable[Gateway]],
    settings_factory: Callable[..., Settings],
) -> None:
    client = await edge_gateway(settings_factory(max_in_flight=1, body_timeout=10.0))
    _reader, writer = await _open(client)
    writer.write(_backup_head(1000))  # in flight: its handler waits for the body
    await asyncio.sleep(0.3)
    started = time.monotonic()
    resp = await client.get("/healthz")
    assert resp.status == 503 and resp.headers["Retry-After"] == "1"
    assert (await resp.json())["error"]["code"] == "overloaded"
    assert time.monotonic() - started < 1
    writer.close()
    await asyncio.sleep(0.3)
    assert (await client.get("/healthz")).status == 200


async def test_one_client_is_limited_and_another_is_not(
    gateway_factory: Callable[..., Awaitable[Gateway]],
    settings_factory: Callable[..., Settings],
) -> None:
    settings = settings_factory(rate_limit_burst=3, rate_limit_per_second=0.01, commit_wait=0.1)
    client = await gateway_factory(settings)

    async def write(client_id: str) -> Any:
        body = {"clientId": client_id, "backupMethod": "GDRIVE", "share": "s"}
        return await client.post("/webhook/backup", json=body, headers=secret_headers())

    assert [(await write("greedy")).status for _ in range(3)] == [200, 200, 200]
    refused = await write("greedy")
    assert refused.status == 429 and refused.headers["Retry-After"] == "100"
    assert (await refused.json())["error"]["code"] == "too_many_requests"
    assert (await write("modest")).status == 200
    metrics = await (await client.get("/metrics")).text()
    assert 'sharevault_throttled_requests_total{reason="client_rate",route="/webhook/backup"}' in (
        metrics
    )


async def test_an_address_that_keeps_failing_authentication_is_refused(
    gateway_factory: Callable[..., Awaitable[Gateway]],
    settings_factory: Callable[..., Settings],
) -> None:
    settings = settings_factory(auth_failure_burst=2, auth_failure_per_second=0.01)
    client = await gateway_factory(settings)
    wrong = secret_headers("not-the-secret-at-all")
    body = {"clientId": "c"}
    statuses = [
        (await client.post("/webhook/backup/fetch", json=body, headers=wrong)).status
        for _ in range(3)
    ]
    assert statuses == [401, 401, 429]
    # Refused before the secret is looked at: guessing on is no use while the bucket is full.
    right = await client.post("/webhook/backup/fetch", json=body, headers=secret_headers())
    assert right.status == 429


async def test_a_secret_whose_bytes_are_not_utf8_is_401_not_500(
    edge_gateway: Callable[[Settings], Awaitable[Gateway]],
    settings_factory: Callable[..., Settings],
) -> None:
    client = await edge_gateway(settings_factory())
    reader, writer = await _open(client)
    body = b'{"clientId": "c"}'
    writer.write(
        _backup_head(len(body), secret=b"\xff\xfe\xc3(latin-1 \xe9t\xe9)").replace(
            b"Host: gateway", b"Host: gateway\r\nConnection: close"
        )
        + body
    )
    raw = await _closed_within(reader, 5)
    writer.close()
    status, _, answer = _status_and_body(raw)
    assert status == 401 and answer["error"]["code"] == "unauthorized"


@pytest.mark.parametrize(
    ("lines", "expected"),
    [
        # A proxy that appends its own line: the caller's forged first line must not win.
        (["203.0.113.9", "198.51.100.7"], "198.51.100.7"),
        (["203.0.113.9, 198.51.100.7"], "198.51.100.7"),
        (["198.51.100.7"], "198.51.100.7"),
    ],
)
def test_forwarded_for_is_read_from_every_line(
    settings_factory: Callable[..., Settings], lines: list[str], expected: str
) -> None:
    settings = settings_factory(trusted_proxies="127.0.0.0/8")
    headers = CIMultiDict([("X-Forwarded-For", line) for line in lines])
    app = web.Application()
    app[SETTINGS] = settings
    request = make_mocked_request("POST", "/webhook/backup", headers=headers, app=app)
    assert request.remote in (None, "127.0.0.1")
    request = request.clone(remote="127.0.0.1")
    assert str(caller_address(request)) == expected


def test_the_previous_secret_must_be_as_long_as_the_current() -> None:
    with pytest.raises(ConfigError):
        load_settings(webhook_secret="s" * 20, webhook_secret_previous="short")
