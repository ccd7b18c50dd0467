"""The gateway's application factory: builds without I/O; resources live in cleanup contexts."""

from __future__ import annotations

from collections.abc import AsyncIterator

from aiohttp import web

from sharevault import hops, memory
from sharevault.background import running
from sharevault.clock import ClockDiscipline, VersionClock
from sharevault.config import Settings
from sharevault.db import Bounds, CommitListener, open_store
from sharevault.portal import PortalClient
from sharevault.service import client_shares, docs, health, monitoring, openapi, webhooks
from sharevault.service.appkeys import (
    BROKER,
    CLIENT_AUTH,
    CLOCK,
    DISCIPLINE,
    KEYRING,
    PORTAL,
    ROUTE,
    SETTINGS,
    SHARES,
    STORE,
    WAITER,
)
from sharevault.service.client_auth import PortalBearerAuthenticator
from sharevault.service.commits import CommitWaiter
from sharevault.service.edge import IN_FLIGHT, InFlight
from sharevault.service.middleware import gateway_middleware
from sharevault.service.monitoring import queue_gauges
from sharevault.service.publishing import CLOSE_WAIT, Coalescer, Route, coalescing_of
from sharevault.service.ratelimit import RATE_LIMITS, RateLimits
from sharevault.wiring import broker_of, keyring_of


async def _database(app: web.Application) -> AsyncIterator[None]:
    settings = app[SETTINGS]
    dsn = settings.database_url.get_secret_value()
    # Nothing the gateway asks of the database may outlive a request, not even in the server.
    async with open_store(
        dsn,
        size=settings.db_pool_size,
        min_size=0,
        bounds=Bounds(settings.pairs_per_method, settings.methods_per_client),
        connect_timeout=settings.request_budget,
        command_timeout=settings.request_budget,
        statement_timeout=settings.request_budget,
    ) as store:
        app[STORE] = store
        waiter = CommitWaiter(store, check_timeout=settings.db_timeout)
        app[WAITER] = waiter
        async with CommitListener(
            dsn,
            waiter.on_committed,
            waiter.on_refused,
            waiter.recheck_all,
            connect_timeout=max(settings.db_timeout, 5.0),
        ):
            yield


async def _clock(app: web.Application) -> AsyncIterator[None]:
    """Compare this gateway's clock with PostgreSQL's before serving, then every interval."""
    settings, discipline = app[SETTINGS], app[DISCIPLINE]
    # The clock versions come from (a test may have put its own in place before start-up).
    discipline.source = app[CLOCK].source
    await discipline.check(app[STORE], settings.db_timeout)
    watch = discipline.watch(app[STORE], settings.db_timeout)
    async with running(watch, "clock-watch"):
        yield


async def _broker(app: web.Application) -> AsyncIterator[None]:
    settings = app[SETTINGS]
    coalescing = coalescing_of(settings)
    async with broker_of(settings, name="sharevault-gateway") as broker:
        app[BROKER] = broker
        route = app[ROUTE] = Route(broker.admin, broker.topology.shares)
        shares = app[SHARES] = Coalescer(broker.publisher, route, coalescing)
        try:
            if settings.detour_check <= 0:
                yield
            else:
                async with running(route.watch(settings.detour_check), "live-watch"):
                    yield
        finally:
            await shares.close(CLOSE_WAIT)


async def _memory(app: web.Application) -> AsyncIterator[None]:
    every = app[SETTINGS].memory_trim_every
    if every <= 0:
        yield
        return
    async with running(memory.trimming(every), "memory-trim"):
        yield


async def _portal(app: web.Application) -> AsyncIterator[None]:
    settings = app[SETTINGS]
    async with PortalClient(settings.portal_api_url, timeout=settings.portal_timeout) as portal:
        app[PORTAL] = portal
        # An operator may have put their own authenticator in place before start-up.
        if CLIENT_AUTH not in app:
            app[CLIENT_AUTH] = PortalBearerAuthenticator(portal, ttl=settings.client_auth_ttl)
        yield


def create_app(settings: Settings) -> web.Application:
    """Routes, middleware and resource contexts; nothing connects until the app starts."""
    app = web.Application(
        # Request id, JSON errors and metrics in one layer; JSON errors count with their status.
        # The hop trace (bench only) sits outside, so that its stamps bracket the request.
        middlewares=[hops.middleware, gateway_middleware] if hops.ON else [gateway_middleware],
        client_max_size=settings.max_body_bytes,
    )
    app[SETTINGS] = settings
    app[KEYRING] = keyring_of(settings)
    app[CLOCK] = VersionClock()
    app[DISCIPLINE] = ClockDiscipline(settings.max_clock_skew, settings.clock_check_interval)
    app[IN_FLIGHT] = InFlight(settings.max_in_flight)
    app[RATE_LIMITS] = RateLimits(settings)
    app.cleanup_ctx.extend([_database, _clock, _broker, _portal, queue_gauges, _memory])
    health.add_routes(app)
    webhooks.add_routes(app, settings.webhook_root)
    client_shares.add_routes(app, settings.client_root)
    openapi.add_routes(app, openapi.all_operations(settings.webhook_root, settings.client_root))
    docs.add_routes(app)
    monitoring.add_routes(app)
    return app
