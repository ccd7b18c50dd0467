"""A task that runs as long as a block does: started on entry, cancelled and awaited on exit."""

from __future__ import annotations

import asyncio
import logging
from collections.abc import AsyncIterator, Coroutine
from contextlib import asynccontextmanager
from typing import Any

log = logging.getLogger(__name__)

# Seconds a cancelled task may take to finish before its block goes on without it.
STOP_WAIT = 5.0


async def stopped(task: asyncio.Task[Any], wait: float = STOP_WAIT) -> None:
    """Cancel `task` and wait (at most `wait` seconds) for it to finish. A library that loses a
    cancellation must not hold a shutdown forever: aiormq 7.2 was seen to leave a task opening a
    channel waiting for an answer that never came, cancelled yet never finishing, so that the
    gateway's shutdown hung. Past `wait` the task is left behind (closing its connection, which
    comes next, ends it)."""
    task.cancel()
    done, _ = await asyncio.wait({task}, timeout=wait)
    if not done:
        log.warning(
            "task %s did not stop within %.0fs of its cancel; going on", task.get_name(), wait
        )
    elif not task.cancelled():
        task.exception()  # retrieved (as gather did): a failure while ending is not news


@asynccontextmanager
async def running(work: Coroutine[Any, Any, None], name: str) -> AsyncIterator[None]:
    task = asyncio.create_task(work, name=name)
    try:
        yield
    finally:
        await stopped(task)
