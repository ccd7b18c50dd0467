"""`/healthz` (the process answers) and `/readyz` (broker and database reachable, and this
gateway's clock within MAX_CLOCK_SKEW of PostgreSQL's)."""

from __future__ import annotations

from aiohttp import web

from sharevault.db import TRANSIENT_ERRORS
from sharevault.service.appkeys import BROKER, DISCIPLINE, STORE

READY_DB_TIMEOUT = 1.0


async def healthz(_request: web.Request) -> web.Response:
    return web.json_response({"status": "ok"})


async def readyz(request: web.Request) -> web.Response:
    # `down` says in words what is wrong with each dependency that is not ok.
    down: dict[str, str] = {}
    problem = request.app[BROKER].problem
    if problem is not None:
        down["broker"] = problem
    try:
        # Well inside any probe's timeout: a stalled database answers "down" rather than late.
        await request.app[STORE].ping(timeout=READY_DB_TIMEOUT)
    except TRANSIENT_ERRORS as exc:
        down["database"] = f"unreachable ({type(exc).__name__})"
    discipline = request.app[DISCIPLINE]
    skew = discipline.problem()
    if skew is not None:
        down["clock"] = skew
    checks = {name: "down" if name in down else "ok" for name in ("broker", "database", "clock")}
    body: dict[str, object] = {"status": "unavailable" if down else "ready", "checks": checks}
    body["clock_offset_seconds"] = discipline.offset
    # Which node each link is on (host:port, a cluster's member), while it is up.
    database = None if "database" in down else request.app[STORE].node
    body["nodes"] = {"broker": request.app[BROKER].node, "database": database}
    if down:
        body["down"] = down
    return web.json_response(body, status=503 if down else 200)


def add_routes(app: web.Application) -> None:
    app.router.add_get("/healthz", healthz)
    app.router.add_get("/readyz", readyz)
