"""Versions of accepted shares, and the discipline of the clock they come from.

A version is the gateway's wall clock in µs: a gateway whose clock runs behind another's would
lose newer writes to older ones, one running ahead would outvote later writes. As CockroachDB does
with its maximum clock offset, each gateway compares its clock with PostgreSQL's, at start and
every CLOCK_CHECK_INTERVAL; beyond MAX_CLOCK_SKEW it turns unready and refuses writes."""

from __future__ import annotations

import asyncio
import logging
import math
import time
from collections.abc import Callable

from sharevault.db import TRANSIENT_ERRORS, Store
from sharevault.metrics import CLOCK_OFFSET, CLOCK_SKEWED

log = logging.getLogger(__name__)


class VersionClock:
    """Receive time in µs, strictly increasing within this process. `source` (ns since the
    epoch) is the wall clock; tests give one that is off."""

    def __init__(self, source: Callable[[], int] = time.time_ns) -> None:
        self._last = 0
        self.source = source

    def next(self) -> int:
        now = self.source() // 1000
        self._last = max(now, self._last + 1)
        return self._last


class ClockDiscipline:
    """The last comparison of this gateway's clock with PostgreSQL's, and its verdict."""

    def __init__(self, max_skew: float, interval: float) -> None:
        self.max_skew = max_skew
        self.interval = interval
        # This clock minus PostgreSQL's, in s, and half the round trip it was measured over:
        # the true offset lies within offset ± uncertainty. None until a first reading.
        self.offset: float | None = None
        self.uncertainty = 0.0

    @property
    def skewed(self) -> bool:
        """Off by more than MAX_CLOCK_SKEW for certain (whatever the round trip hid)."""
        return self.offset is not None and abs(self.offset) - self.uncertainty > self.max_skew

    def problem(self) -> str | None:
        """What /readyz and a refused write say, while skewed."""
        if not self.skewed or self.offset is None:
            return None
        return (
            f"clock_skew: this gateway's clock is {self.offset:+.3f}s (±{self.uncertainty:.3f}s)"
            f" off PostgreSQL's, beyond MAX_CLOCK_SKEW {self.max_skew:g}s"
        )

    @property
    def retry_after(self) -> str:
        """Seconds until the next reading could clear it."""
        return str(max(1, math.ceil(self.interval)))

    def record(self, before_ns: int, database_us: int, after_ns: int) -> None:
        was = self.skewed
        self.offset = ((before_ns + after_ns) / 2000 - database_us) / 1e6
        self.uncertainty = (after_ns - before_ns) / 2e9
        CLOCK_OFFSET.set(self.offset)
        CLOCK_SKEWED.set(1 if self.skewed else 0)
        if self.skewed and not was:
            log.error("%s: refusing writes until it is back", self.problem())
        elif was and not self.skewed:
            log.warning("clock back within MAX_CLOCK_SKEW (offset %+.3fs)", self.offset)

    async def check(self, store: Store, clock: VersionClock, timeout: float) -> None:
        """One reading; when the database does not answer, the last verdict stands."""
        try:
            self.record(*await store.clock_reading(clock.source, timeout))
        except TRANSIENT_ERRORS as exc:
            log.info("clock not compared with PostgreSQL's (%s)", type(exc).__name__)

    async def watch(self, store: Store, clock: VersionClock, timeout: float) -> None:
        """A reading every `interval` seconds, until cancelled."""
        while True:
            await asyncio.sleep(self.interval)
            await self.check(store, clock, timeout)
