"""The security matrix of the webhook surface: secrets, rotation, address allowlist."""

from __future__ import annotations

import hmac
from collections.abc import Callable
from typing import Any

import pytest

from sharevault.config import Settings
from sharevault.service.auth import secret_matches
from tests.conftest import PREVIOUS_SECRET, WEBHOOK_SECRET, WorkerHandle, secret_headers

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
