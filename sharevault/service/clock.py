"""Versions of accepted shares."""

from __future__ import annotations

import time


class VersionClock:
    """Receive time in µs, strictly increasing within this process."""

    def __init__(self) -> None:
        self._last = 0

    def next(self) -> int:
        now = time.time_ns() // 1000
        self._last = max(now, self._last + 1)
        return self._last
