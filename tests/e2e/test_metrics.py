"""Metrics change as requests flow: scrape, act, scrape."""

from __future__ import annotations

import logging

import pytest
from aiohttp.test_utils import TestClient

from sharevault.logs import install_request_ids
from tests.support.environment import WEBHOOK_SECRET, secret_headers
from tests.support.inprocess import WorkerHandle
from tests.support.scraping import sample_value
from tests.support.waiting import eventually


async def scrape(gateway: TestClient) -> str:  # type: ignore[type-arg]
    resp = await gateway.get("/metrics")
    assert resp.status == 200
    assert resp.content_type.startswith("text/plain")
    return await resp.text()


async def test_request_metrics_count_by_route_and_status_without_ids(
    gateway: TestClient,  # type: ignore[type-arg]
    worker: WorkerHandle,
) -> None:
    route = "/webhook/backup"
    before = await scrape(gateway)
    body = {"clientId": "cl-metric-secret-id", "share": "metric-share-value"}
    assert (await gateway.post(route, json=body, headers=secret_headers())).status == 200
    assert (await gateway.post(route, json=body, headers={"X-Webhook-Secret": "no"})).status == 401
    fetch = await gateway.post(
        f"{route}/fetch", json={"clientId": "cl-metric-secret-id"}, headers=secret_headers()
    )
    assert fetch.status == 200
    after = await scrape(gateway)

    def delta(name: str, **labels: str) -> float:
        return sample_value(after, name, **labels) - sample_value(before, name, **labels)

    assert delta("sharevault_http_requests_total", route=route, method="POST", status="200") == 1
    assert delta("sharevault_http_requests_total", route=route, method="POST", status="401") == 1
    assert delta("sharevault_http_request_seconds_count", route=route, method="POST") == 2
    for needle in ("cl-metric-secret-id", "metric-share-value", WEBHOOK_SECRET):
        assert needle not in after


async def test_worker_and_read_your_writes_metrics_move(
    gateway: TestClient,  # type: ignore[type-arg]
    worker: WorkerHandle,
) -> None:
    before = await scrape(gateway)
    body = {"clientId": "cl-m2", "backupMethod": "GDRIVE", "share": "s-1"}
    for share in ("s-1", "s-2"):
        resp = await gateway.post(
            "/webhook/backup", json={**body, "share": share}, headers=secret_headers()
        )
        assert (await resp.json())["status"] == "committed"
    await eventually(
        lambda: worker.acked >= 2
    )  # the gateway answers at commit; the worker acks and counts just after
    after = await scrape(gateway)

    def delta(name: str, **labels: str) -> float:
        return sample_value(after, name, **labels) - sample_value(before, name, **labels)

    assert delta("sharevault_worker_messages_total", outcome="applied") == 2
    assert delta("sharevault_worker_batch_size_count") >= 1
    assert delta("sharevault_worker_commit_seconds_count") >= 1
    assert delta("sharevault_commit_waits_total", outcome="committed") == 2
    assert delta("sharevault_publish_confirm_seconds_count") == 2


async def test_request_id_travels_from_gateway_to_worker_logs(
    gateway: TestClient,  # type: ignore[type-arg]
    worker: WorkerHandle,
    caplog: pytest.LogCaptureFixture,
) -> None:
    install_request_ids()
    caplog.set_level(logging.DEBUG)
    headers = secret_headers() | {"X-Request-Id": "req-trace-42"}
    resp = await gateway.post(
        "/webhook/backup", json={"clientId": "cl-rid", "share": "s"}, headers=headers
    )
    assert resp.status == 200
    assert resp.headers["X-Request-Id"] == "req-trace-42"
    message_id = (await resp.json())["messageId"]
    await eventually(lambda: worker.acked >= 1)  # the worker logs just after it acks
    tagged = [r for r in caplog.records if getattr(r, "request_id", None) == "req-trace-42"]
    gateway_lines = [r for r in tagged if r.name.startswith("sharevault.service")]
    worker_lines = [r for r in tagged if r.name.startswith("sharevault.worker")]
    assert any(message_id in r.getMessage() for r in gateway_lines)
    assert any(message_id in r.getMessage() for r in worker_lines)
    # A request without an id gets a fresh one, and a hostile one is replaced.
    plain = await gateway.post(
        "/webhook/backup", json={"clientId": "cl-rid", "share": "t"}, headers=secret_headers()
    )
    assert len(plain.headers["X-Request-Id"]) == 32
    hostile = secret_headers() | {"X-Request-Id": "bad id <with> spaces"}
    resp = await gateway.post(
        "/webhook/backup", json={"clientId": "cl-rid", "share": "u"}, headers=hostile
    )
    assert resp.headers["X-Request-Id"] != "bad id <with> spaces"
