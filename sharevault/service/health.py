"""`/healthz` (the process answers) and `/readyz` (broker and database reachable)."""

from __future__ import annotations

import asyncio

from aiohttp import web

from sharevault.service.keys import BROKER, STORE
from sharevault.store import TRANSIENT_ERRORS


async def healthz(_request: web.Request) -> web.Response:
    return web.json_response({"status": "ok"})


async def readyz(request: web.Request) -> web.Response:
    checks = {"broker": "ok" if request.app[BROKER].ready else "down"}
    try:
        async with asyncio.timeout(1.0):
            await request.app[STORE].ping()
        checks["database"] = "ok"
    except TRANSIENT_ERRORS:
        checks["database"] = "down"
    ready = all(v == "ok" for v in checks.values())
    return web.json_response(
        {"status": "ready" if ready else "unavailable", "checks": checks},
        status=200 if ready else 503,
    )


def add_routes(app: web.Application) -> None:
    app.router.add_get("/healthz", healthz)
    app.router.add_get("/readyz", readyz)
