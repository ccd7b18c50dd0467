"""Worker process: open resources, consume until SIGTERM/SIGINT, drain, exit."""

from __future__ import annotations

import asyncio
import logging
import signal

from sharevault.broker import Broker
from sharevault.config import Settings, mask_url
from sharevault.crypto import Keyring
from sharevault.store import open_store
from sharevault.worker.consumer import ShareWorker

log = logging.getLogger(__name__)


async def run_worker(settings: Settings, stop: asyncio.Event | None = None) -> None:
    """Run one worker until `stop` is set (by default: until SIGTERM or SIGINT)."""
    if stop is None:
        stop = asyncio.Event()
        loop = asyncio.get_running_loop()
        for sig in (signal.SIGTERM, signal.SIGINT):
            loop.add_signal_handler(sig, stop.set)
    log.info("worker starting: database %s", mask_url(settings.database_url))
    async with (
        open_store(settings.database_url.get_secret_value(), size=2, min_size=0) as store,
        Broker(
            settings.amqp_url.get_secret_value(), settings.amqp_prefix, name="sharevault-worker"
        ) as broker,
    ):
        await ShareWorker(settings, store, broker, Keyring(settings.keyring)).run(stop)
