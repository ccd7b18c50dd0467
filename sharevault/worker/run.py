"""Worker process: open resources, consume until SIGTERM/SIGINT, drain, exit."""

from __future__ import annotations

import asyncio
import logging
import signal
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager

from prometheus_client import start_http_server

from sharevault.background import running
from sharevault.config import Settings, mask_url
from sharevault.db import Bounds, open_store, vacuuming_shares
from sharevault.wiring import broker_of, keyring_of
from sharevault.worker.consumer import ShareWorker
from sharevault.worker.outbox import running_outbox

log = logging.getLogger(__name__)


@asynccontextmanager
async def open_worker(settings: Settings) -> AsyncIterator[ShareWorker]:
    """A worker with its own pool and broker connection, closed with the block."""
    log.info("worker starting: database %s", mask_url(settings.database_url))
    keyring = keyring_of(settings)
    # Connections: the consumer's batches, the outbox sender (held while Portal answers), a
    # vacuum where autovacuum is off (held while it runs), and one to spare.
    async with (
        open_store(
            settings.database_url.get_secret_value(),
            size=4,
            min_size=0,
            bounds=Bounds(settings.pairs_per_method, settings.methods_per_client),
        ) as store,
        vacuuming_shares(store, enabled=settings.worker_vacuum),
        broker_of(settings, name="sharevault-worker") as broker,
        running_outbox(settings, store, keyring),
    ):
        worker = ShareWorker(settings, store, broker, keyring)
        await worker.clock.check(store, settings.db_timeout)
        async with running(worker.clock.watch(store, settings.db_timeout), "clock-watch"):
            yield worker


async def run_worker(settings: Settings, stop: asyncio.Event | None = None) -> None:
    """Run one worker until `stop` is set (by default: until SIGTERM or SIGINT)."""
    if stop is None:
        stop = asyncio.Event()
        loop = asyncio.get_running_loop()
        for sig in (signal.SIGTERM, signal.SIGINT):
            loop.add_signal_handler(sig, stop.set)
    if settings.worker_metrics_port:
        # A thread of prometheus_client's own: /metrics answers even while the loop is busy.
        start_http_server(settings.worker_metrics_port, addr=settings.worker_metrics_host)
    async with open_worker(settings) as worker:
        await worker.run(stop)
