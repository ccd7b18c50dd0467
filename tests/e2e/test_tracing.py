"""OpenTelemetry: a trace started by the caller continues through the gateway, the queue and the
worker (spans joined by W3C trace context in the message headers)."""

from __future__ import annotations

import asyncio

from aiohttp.test_utils import TestClient
from opentelemetry import trace
from opentelemetry.sdk.trace import TracerProvider
from opentelemetry.sdk.trace.export import SimpleSpanProcessor
from opentelemetry.sdk.trace.export.in_memory_span_exporter import InMemorySpanExporter

from sharevault import otel
from tests.support.environment import secret_headers
from tests.support.inprocess import WorkerHandle

TRACE_ID = "4bf92f3577b34da6a3ce929d0e0e4736"
CALLER = f"00-{TRACE_ID}-00f067aa0ba902b7-01"
_EXPORTER = InMemorySpanExporter()


def sdk_installed() -> None:
    """One SDK provider for the test process (OpenTelemetry allows setting it only once)."""
    if not otel.active():
        provider = TracerProvider()
        provider.add_span_processor(SimpleSpanProcessor(_EXPORTER))
        trace.set_tracer_provider(provider)


async def test_one_trace_from_caller_through_gateway_and_queue_to_worker(
    gateway: TestClient,  # type: ignore[type-arg]
    worker: WorkerHandle,
) -> None:
    sdk_installed()
    _EXPORTER.clear()
    headers = secret_headers() | {"traceparent": CALLER}
    resp = await gateway.post(
        "/webhook/backup", json={"clientId": "cl-t", "share": "s"}, headers=headers
    )
    assert resp.status == 200
    message_id = (await resp.json())["messageId"]
    for _ in range(200):
        if worker.acked >= 1:
            break
        await asyncio.sleep(0.02)
    spans = {s.name: s for s in _EXPORTER.get_finished_spans()}
    publish, store = spans["sharevault.publish"], spans["sharevault.db"]
    assert f"{publish.context.trace_id:032x}" == TRACE_ID
    assert store.context.trace_id == publish.context.trace_id
    assert store.parent is not None and store.parent.span_id == publish.context.span_id
    assert store.attributes is not None and store.attributes["message_id"] == message_id
