"""Versions of accepted shares, and the discipline of the clock they come from.

A version is the gateway's wall clock in µs: a gateway whose clock runs behind another's would
lose newer writes to older ones, one running ahead would outvote later writes. As CockroachDB does
with its maximum clock offset, each gateway compares its clock with PostgreSQL's, at start and
every CLOCK_CHECK_INTERVAL; beyond MAX_CLOCK_SKEW it turns unready and refuses writes. Workers
compare theirs too, and judge whether a version lies in the future by PostgreSQL's time, so that
their own clock being off never makes them refuse a gateway's share."""

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
    """The last comparison of this process's clock with PostgreSQL's, and its verdict. `gateway`:
    its verdict decides whether it takes writes (and the gauge `sharevault_clock_skewed`).

    Between readings the monotonic clock tells how far the wall clock (`source`) was stepped
    since the last one: a step counts at once, not at the next reading."""

    def __init__(
        self,
        max_skew: float,
        interval: float,
        *,
        gateway: bool = True,
        source: Callable[[], int] = time.time_ns,
    ) -> None:
        self.max_skew = max_skew
        self.interval = interval
        self.gateway = gateway
        self.source = source
        # This clock minus PostgreSQL's, in s, at the last reading, and half the round trip it
        # was measured over: the true offset lay within offset ± uncertainty. None until then.
        self._offset: float | None = None
        self.uncertainty = 0.0
        # The wall clock minus the monotonic one at the last reading (ns).
        self._anchor = 0

    @property
    def offset(self) -> float | None:
        """This clock minus PostgreSQL's now, in s: the last reading, plus any step since."""
        if self._offset is None:
            return None
        return self._offset + (self.source() - time.monotonic_ns() - self._anchor) / 1e9

    @property
    def skewed(self) -> bool:
        """Off by more than MAX_CLOCK_SKEW for certain (whatever the round trip hid)."""
        offset = self.offset
        return offset is not None and self._beyond(offset)

    def _beyond(self, offset: float) -> bool:
        return abs(offset) - self.uncertainty > self.max_skew

    def problem(self) -> str | None:
        """What /readyz and a refused write say, while skewed."""
        offset = self.offset
        if offset is None or not self._beyond(offset):
            return None
        role = "gateway" if self.gateway else "worker"
        return (
            f"clock_skew: this {role}'s clock is {offset:+.3f}s (±{self.uncertainty:.3f}s)"
            f" off PostgreSQL's, beyond MAX_CLOCK_SKEW {self.max_skew:g}s"
        )

    @property
    def retry_after(self) -> str:
        """Seconds until the next reading could clear it."""
        return str(max(1, math.ceil(self.interval)))

    def latest_version(self) -> int:
        """The newest version (µs) a gateway within MAX_CLOCK_SKEW of PostgreSQL's clock can
        have given by now: PostgreSQL's time as this clock and the last reading tell, plus the
        skew and what the reading's round trip hid."""
        correction = (self.offset or 0.0) - self.uncertainty
        return self.source() // 1000 + int((self.max_skew - correction) * 1_000_000)

    def record(self, before_ns: int, database_us: int, after_ns: int) -> None:
        """A reading: `source` before and after the query (ns), PostgreSQL's answer (µs)."""
        was = self.skewed
        self._anchor = self.source() - time.monotonic_ns()
        self._offset = ((before_ns + after_ns) / 2000 - database_us) / 1e6
        self.uncertainty = (after_ns - before_ns) / 2e9
        CLOCK_OFFSET.set(self._offset)
        if not self.gateway:
            if self.skewed and not was:
                log.warning("%s (this worker judges versions by PostgreSQL's)", self.problem())
            return
        CLOCK_SKEWED.set(1 if self.skewed else 0)
        if self.skewed and not was:
            log.error("%s: refusing writes until it is back", self.problem())
        elif was and not self.skewed:
            log.warning("clock back within MAX_CLOCK_SKEW (offset %+.3fs)", self._offset)

    async def check(self, store: Store, timeout: float) -> None:
        """One reading of `source` against PostgreSQL's clock; when the database does not
        answer, the last verdict stands."""
        try:
            self.record(*await store.clock_reading(self.source, timeout))
        except TRANSIENT_ERRORS as exc:
            log.info("clock not compared with PostgreSQL's (%s)", type(exc).__name__)

    async def watch(self, store: Store, timeout: float) -> None:
        """A reading every `interval` seconds, until cancelled."""
        while True:
            await asyncio.sleep(self.interval)
            await self.check(store, timeout)
