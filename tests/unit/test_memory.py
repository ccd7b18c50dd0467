"""After a burst, freed memory goes back to the operating system (glibc's malloc_trim)."""

from __future__ import annotations

import asyncio
from pathlib import Path

import pytest

from sharevault import memory

pytestmark = pytest.mark.skipif(not memory.available(), reason="no malloc_trim (not glibc)")


def rss_mb() -> float:
    for line in Path("/proc/self/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1]) / 1024
    raise AssertionError("no VmRSS")


def test_trim_returns_what_a_burst_left_among_live_objects() -> None:
    # A burst's shape: 8 KB buffers interleaved with small objects that outlive them, so the
    # freed pages sit between live ones and the heap's top cannot simply shrink.
    survivors, buffers = [], []
    for n in range(8000):
        buffers.append(bytes(8192) + bytes([n % 256]))
        survivors.append(str(n) * 30)
    del buffers
    before = rss_mb()
    assert memory.trim()
    assert rss_mb() < before - 40, "about 64 MB were free: most of it must leave the process"
    assert len(survivors) == 8000


async def test_trimming_runs_until_cancelled() -> None:
    task = asyncio.create_task(memory.trimming(0.01))
    await asyncio.sleep(0.05)
    assert not task.done()
    task.cancel()
    with pytest.raises(asyncio.CancelledError):
        await task
