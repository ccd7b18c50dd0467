"""`/metrics` and the middleware that counts and times every request by route (not by path)."""

from __future__ import annotations

import asyncio
import contextlib
import time
from collections.abc import AsyncIterator

from aiohttp import web
from prometheus_client import CONTENT_TYPE_LATEST, REGISTRY, generate_latest

from sharevault.broker import Broker
from sharevault.metrics import HTTP_REQUESTS, HTTP_SECONDS, QUEUE_CONSUMERS, QUEUE_MESSAGES
from sharevault.service.errors import Handler
from sharevault.service.keys import BROKER


def route_label(request: web.Request) -> str:
    """The route's template (`/portal/clients/{clientId}/backup`), so no id ever becomes a label."""
    info = request.match_info
    resource = info.route.resource if info.http_exception is None else None
    return resource.canonical if resource is not None else "unmatched"


@web.middleware
async def metrics_middleware(request: web.Request, handler: Handler) -> web.StreamResponse:
    started = time.perf_counter()
    status = 500
    try:
        response = await handler(request)
        status = response.status
        return response
    except web.HTTPException as exc:
        status = exc.status
        raise
    finally:
        route = route_label(request)
        HTTP_REQUESTS.labels(route, request.method, str(status)).inc()
        HTTP_SECONDS.labels(route, request.method).observe(time.perf_counter() - started)


async def metrics_endpoint(_request: web.Request) -> web.Response:
    response = web.Response(body=generate_latest(REGISTRY))
    response.headers["Content-Type"] = CONTENT_TYPE_LATEST
    return response


def add_routes(app: web.Application) -> None:
    app.router.add_get("/metrics", metrics_endpoint)


QUEUE_SAMPLE_EVERY = 5.0


async def _sample_queues(broker: Broker) -> None:
    topology = broker.topology
    while True:
        lanes = ((topology.shares, "live"), (topology.backlog, "backlog"), (topology.dead, "dead"))
        for name, label in lanes:
            # A gauge is best effort: the broker being away shows in /readyz, not here.
            with contextlib.suppress(Exception):
                counts = await broker.queue_counts(name)
                if counts is not None:
                    QUEUE_MESSAGES.labels(label).set(counts[0])
                    QUEUE_CONSUMERS.labels(label).set(counts[1])
        await asyncio.sleep(QUEUE_SAMPLE_EVERY)


async def queue_gauges(app: web.Application) -> AsyncIterator[None]:
    """Queue depth and consumer gauges, sampled in the background while the gateway runs."""
    task = asyncio.create_task(_sample_queues(app[BROKER]), name="queue-gauges")
    try:
        yield
    finally:
        task.cancel()
        await asyncio.gather(task, return_exceptions=True)
