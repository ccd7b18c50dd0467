"""Background tasks end with their block, and one that loses its cancel cannot hold it forever."""

from __future__ import annotations

import asyncio
import logging
import time

import pytest

from sharevault.background import running, stopped


async def test_a_task_runs_as_long_as_its_block() -> None:
    ticks = 0

    async def tick() -> None:
        nonlocal ticks
        while True:
            ticks += 1
            await asyncio.sleep(0.01)

    async with running(tick(), "tick"):
        await asyncio.sleep(0.1)
    seen = ticks
    assert seen > 0
    await asyncio.sleep(0.05)
    assert ticks == seen  # stopped on exit


async def test_a_task_that_loses_its_cancel_is_left_behind_after_the_wait(
    caplog: pytest.LogCaptureFixture,
) -> None:
    release = asyncio.Event()

    async def deaf() -> None:
        # As aiormq's channel open was seen to do: the cancel is taken and the task goes on.
        while not release.is_set():
            try:
                await release.wait()
            except asyncio.CancelledError:
                continue

    task = asyncio.create_task(deaf(), name="deaf")
    await asyncio.sleep(0)
    started = time.monotonic()
    with caplog.at_level(logging.WARNING, logger="sharevault.background"):
        await stopped(task, wait=0.2)
    assert 0.2 <= time.monotonic() - started < 2
    assert not task.done()
    assert "task deaf did not stop within" in caplog.text
    release.set()
    await task


async def test_a_task_that_failed_is_stopped_quietly() -> None:
    async def fail() -> None:
        raise RuntimeError("boom")

    task = asyncio.create_task(fail())
    await asyncio.sleep(0)
    await stopped(task, wait=1)
    assert task.done() and isinstance(task.exception(), RuntimeError)
