"""A worker and gateways run inside the test's own event loop."""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable, Callable

from aiohttp.test_utils import TestClient

from sharevault.config import Settings
from sharevault.worker import ShareWorker, open_worker

GatewayFactory = Callable[..., Awaitable[TestClient]]  # type: ignore[type-arg]


class WorkerHandle:
    """An in-process worker task that the test can stop, with its counters in reach."""

    def __init__(self, settings: Settings) -> None:
        self.stop = asyncio.Event()
        self.worker: ShareWorker | None = None
        self.task = asyncio.create_task(self._run(settings))

    async def _run(self, settings: Settings) -> None:
        async with open_worker(settings) as worker:
            self.worker = worker
            await worker.run(self.stop)

    @property
    def acked(self) -> int:
        return self.worker.acked if self.worker else 0

    @property
    def dead_lettered(self) -> int:
        return self.worker.dead_lettered if self.worker else 0

    async def close(self) -> None:
        self.stop.set()
        await asyncio.wait_for(self.task, 30)
