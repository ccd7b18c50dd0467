"""`/metrics` (one process or the sum of several), and counting and timing every request by
route (not by path)."""

from __future__ import annotations

import asyncio
import contextlib
import time
from collections.abc import AsyncIterator

from aiohttp import web
from prometheus_client import (
    CONTENT_TYPE_LATEST,
    REGISTRY,
    CollectorRegistry,
    Counter,
    Histogram,
    generate_latest,
)
from prometheus_client.multiprocess import MultiProcessCollector

from sharevault.background import running
from sharevault.broker import Broker
from sharevault.metrics import (
    HTTP_REQUESTS,
    HTTP_SECONDS,
    MULTIPROCESS_DIR,
    QUEUE_CONSUMERS,
    QUEUE_MESSAGES,
)
from sharevault.service.appkeys import BROKER


def route_label(request: web.Request) -> str:
    """The route's template (`/portal/clients/{clientId}/backup`), so no id ever becomes a label."""
    info = request.match_info
    resource = info.route.resource if info.http_exception is None else None
    return resource.canonical if resource is not None else "unmatched"


_Series = tuple[Counter, Histogram]
# Labelled children resolved once per (route, method, status): `.labels()` takes a lock and
# builds a key on every call. Bounded, as a method the router does not know can be any token.
_SERIES: dict[tuple[str, str, int], _Series] = {}
_SERIES_CACHED = 512


def count_request(request: web.Request, status: int, started: float) -> None:
    """Count one answered request and its latency since `started` (time.perf_counter)."""
    key = (route_label(request), request.method, status)
    series = _SERIES.get(key)
    if series is None:
        route, method, _ = key
        series = (
            HTTP_REQUESTS.labels(route, method, str(status)),
            HTTP_SECONDS.labels(route, method),
        )
        if len(_SERIES) < _SERIES_CACHED:
            _SERIES[key] = series
    series[0].inc()
    series[1].observe(time.perf_counter() - started)


def _registry() -> CollectorRegistry:
    if MULTIPROCESS_DIR is None:
        return REGISTRY
    # Several gateway processes: every process's samples, summed (or per gauge mode) from the
    # files they all write to the shared directory.
    registry = CollectorRegistry()
    MultiProcessCollector(registry, path=MULTIPROCESS_DIR)  # type: ignore[no-untyped-call]
    return registry


async def metrics_endpoint(_request: web.Request) -> web.Response:
    response = web.Response(body=generate_latest(_registry()))
    response.headers["Content-Type"] = CONTENT_TYPE_LATEST
    return response


def add_routes(app: web.Application) -> None:
    app.router.add_get("/metrics", metrics_endpoint)


QUEUE_SAMPLE_EVERY = 5.0


async def _sample_queues(broker: Broker) -> None:
    topology = broker.topology
    while True:
        queues = ((topology.shares, "live"), (topology.backlog, "backlog"), (topology.dead, "dead"))
        for name, label in queues:
            # A gauge is best effort: the broker being away shows in /readyz, not here.
            with contextlib.suppress(Exception):
                counts = await broker.admin.queue_counts(name)
                if counts is not None:
                    QUEUE_MESSAGES.labels(label).set(counts[0])
                    QUEUE_CONSUMERS.labels(label).set(counts[1])
        await asyncio.sleep(QUEUE_SAMPLE_EVERY)


async def queue_gauges(app: web.Application) -> AsyncIterator[None]:
    """Queue depth and consumer gauges, sampled in the background while the gateway runs."""
    async with running(_sample_queues(app[BROKER]), "queue-gauges"):
        yield
