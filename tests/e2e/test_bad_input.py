"""Every class of bad input gets its JSON 4xx, and nothing is queued or stored."""

from __future__ import annotations

import json
from typing import Any

import asyncpg
import pytest
from aiohttp.test_utils import TestClient

from sharevault.broker import Broker
from tests.support.environment import WEBHOOK_SECRET, secret_headers

SHARE = "a-share-that-must-never-be-echoed-" + "x" * 64
GOOD = {"clientId": "cl-1", "backupMethod": "GDRIVE", "share": SHARE}


async def expect_error(resp: Any, status: int, code: str) -> dict[str, Any]:
    assert resp.status == status, await resp.text()
    assert resp.content_type == "application/json"
    body = await resp.json()
    assert set(body) == {"error"}
    assert body["error"]["code"] == code
    assert isinstance(body["error"]["message"], str) and body["error"]["message"]
    text = json.dumps(body)
    assert SHARE not in text and WEBHOOK_SECRET not in text
    return body  # type: ignore[no-any-return]


@pytest.fixture
async def nothing_stored(
    gateway: TestClient,  # type: ignore[type-arg]
    publisher: Broker,
    db: asyncpg.Connection,
) -> Any:
    yield
    assert await publisher.admin.queue_depth(publisher.topology.shares) == 0
    assert await db.fetchval("SELECT count(*) FROM shares") == 0


@pytest.mark.parametrize("path", ["/webhook/backup", "/webhook/backup/fetch"])
@pytest.mark.parametrize("secret", [None, "", "wrong-secret-of-good-length", WEBHOOK_SECRET + "x"])
async def test_wrong_or_missing_secret_is_401(
    gateway: TestClient,  # type: ignore[type-arg]
    nothing_stored: None,
    path: str,
    secret: str | None,
) -> None:
    headers = {} if secret is None else {"X-Webhook-Secret": secret}
    resp = await gateway.post(path, json=GOOD, headers=headers)
    await expect_error(resp, 401, "unauthorized")


@pytest.mark.parametrize(
    "raw",
    [b"{not json", b"", b'{"clientId": "c", "share": "unterminated', b"\xff\xfe", b"[1, 2"],
)
async def test_malformed_json_is_400(
    gateway: TestClient,  # type: ignore[type-arg]
    nothing_stored: None,
    raw: bytes,
) -> None:
    resp = await gateway.post("/webhook/backup", data=raw, headers=secret_headers())
    await expect_error(resp, 400, "malformed_json")


@pytest.mark.parametrize("content_type", ["text/plain", "application/x-www-form-urlencoded", None])
async def test_wrong_content_type_is_415(
    gateway: TestClient,  # type: ignore[type-arg]
    nothing_stored: None,
    content_type: str | None,
) -> None:
    headers = {"X-Webhook-Secret": WEBHOOK_SECRET}
    if content_type:
        headers["Content-Type"] = content_type
    resp = await gateway.post("/webhook/backup", data=json.dumps(GOOD).encode(), headers=headers)
    await expect_error(resp, 415, "unsupported_media_type")


async def test_too_large_is_413(
    gateway: TestClient,  # type: ignore[type-arg]
    nothing_stored: None,
) -> None:
    body = {**GOOD, "share": "x" * (300 * 1024)}  # the test gateway allows 256 KiB
    resp = await gateway.post("/webhook/backup", json=body, headers=secret_headers())
    await expect_error(resp, 413, "body_too_large")


async def test_too_large_without_content_length_is_413(
    gateway: TestClient,  # type: ignore[type-arg]
    nothing_stored: None,
) -> None:
    async def chunks() -> Any:
        for _ in range(300):
            yield b"x" * 1024

    resp = await gateway.post("/webhook/backup", data=chunks(), headers=secret_headers())
    await expect_error(resp, 413, "body_too_large")


@pytest.mark.parametrize(
    "body",
    [
        {"share": SHARE},
        {"clientId": "cl-1"},
        {"clientId": "cl-1", "share": 12345},
        {"clientId": "cl-1", "share": [SHARE]},
        {"clientId": "cl-1", "share": ""},
        {"clientId": "", "share": SHARE},
        {"clientId": "c" * 300, "share": SHARE},
        {"clientId": "cl-1", "backupMethod": 7, "share": SHARE},
        {"clientId": "cl-1", "backupSharePairId": {"a": 1}, "share": SHARE},
        [GOOD],
        "just a string",
    ],
)
async def test_schema_violations_are_422_without_echoing_values(
    gateway: TestClient,  # type: ignore[type-arg]
    nothing_stored: None,
    body: Any,
) -> None:
    resp = await gateway.post("/webhook/backup", json=body, headers=secret_headers())
    await expect_error(resp, 422, "invalid_body")


@pytest.mark.parametrize("body", [{}, {"clientId": ""}, {"clientId": 5}, []])
async def test_bad_fetch_bodies_are_422(
    gateway: TestClient,  # type: ignore[type-arg]
    nothing_stored: None,
    body: Any,
) -> None:
    resp = await gateway.post("/webhook/backup/fetch", json=body, headers=secret_headers())
    await expect_error(resp, 422, "invalid_body")


async def test_unknown_route_and_method_are_json(
    gateway: TestClient,  # type: ignore[type-arg]
    nothing_stored: None,
) -> None:
    await expect_error(await gateway.get("/nope"), 404, "not_found")
    await expect_error(await gateway.get("/webhook/backup"), 405, "method_not_allowed")
