"""Handing freed memory back to the operating system after a burst.

A burst of requests (hundreds at once, each with an 8 KB body, its parsed copy and the sealed share)
leaves glibc's heap with free pages among live ones; glibc keeps them, so the gateway's RSS stayed
~30 MB above its steady level after a burst of 512 concurrent requests, though Python had freed
everything (measured: 74 MB steady, 105 MB after the burst, 102 MB five seconds later, 82 MB after
`malloc_trim(0)`). `malloc_trim` returns every free page (madvise), not only the heap's top."""

from __future__ import annotations

import asyncio
import ctypes
import ctypes.util
import logging
from collections.abc import Callable

log = logging.getLogger(__name__)


def _load_trim() -> Callable[[int], int] | None:
    """glibc's malloc_trim, or None where the C library has none (musl, macOS)."""
    name = ctypes.util.find_library("c")
    if name is None:
        return None
    try:
        trim = ctypes.CDLL(name).malloc_trim
    except (OSError, AttributeError):
        return None
    trim.argtypes = [ctypes.c_size_t]
    trim.restype = ctypes.c_int
    return trim


_TRIM = _load_trim()


def available() -> bool:
    return _TRIM is not None


def trim() -> bool:
    """Return free heap pages to the OS; True if glibc released any."""
    return _TRIM is not None and bool(_TRIM(0))


async def trimming(every: float) -> None:
    """Forever: trim every `every` seconds (a few milliseconds each, on the event loop)."""
    if _TRIM is None:
        log.info("no malloc_trim in this C library: freed memory stays with the allocator")
        return
    while True:
        await asyncio.sleep(every)
        trim()
