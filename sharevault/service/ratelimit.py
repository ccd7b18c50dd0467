"""Rate limits (docs/operations.md, "Security"): writes per client id, failed authentications per
source address. Each key is a leaky bucket — a burst of `burst`, then `per_second` on average;
beyond → 429 + Retry-After — kept as one float, its theoretical arrival time (GCRA, the generic cell
rate algorithm of ATM networks that redis-cell and throttled use). In-process, per gateway process:
N processes (or N gateways) give N times the limit.

Why not a library's bucket objects: aiolimiter (used before) keeps an object with its own dict per
key, about 11 µs per fresh key and tens of thousands of live objects for the garbage collector at
bench rates; a float per key in one dict is about 1 µs and nothing for the collector to walk.

A key whose arrival time has passed has a full bucket again, exactly as a key never seen: such
keys are swept once the dict has doubled since the last sweep, and at most `max_keys` are held
(past it the oldest go first, then start with a full bucket): memory stays bounded whatever the
callers send."""

from __future__ import annotations

import itertools
import math
import time
from collections.abc import Callable

from aiohttp import web

from sharevault.config import Settings
from sharevault.metrics import THROTTLED
from sharevault.service.errors import ApiError
from sharevault.service.ipfilter import caller_address
from sharevault.service.monitoring import route_label

MAX_KEYS = 200_000
SWEEP_AT_LEAST = 1_024  # keys held before the first sweep


class Limiter:
    """Leaky buckets by key (GCRA); `burst` 0: no limit."""

    def __init__(
        self,
        burst: int,
        per_second: float,
        reason: str,
        max_keys: int = MAX_KEYS,
        clock: Callable[[], float] = time.monotonic,
    ):
        self._burst = burst
        self._interval = 1 / per_second if burst else 0.0
        # A request fits while the key's arrival time is at most this far ahead of now (and a
        # nanosecond, for float rounding: a request exactly on time is never refused).
        self._tolerance = (burst - 1) * self._interval + 1e-9
        self._arrivals: dict[str, float] = {}
        self._max_keys = max_keys
        self._sweep_at = min(SWEEP_AT_LEAST, max_keys)
        self._clock = clock
        self._retry_after = str(max(1, math.ceil(self._interval)))
        self._reason = reason

    @property
    def on(self) -> bool:
        return self._burst > 0

    def __len__(self) -> int:
        return len(self._arrivals)

    def full(self, key: str) -> bool:
        if not self.on:
            return False
        arrival = self._arrivals.get(key)
        return arrival is not None and arrival - self._clock() > self._tolerance

    def count(self, key: str) -> None:
        """One more for `key`, if its bucket has room."""
        if not self.on:
            return
        now = self._clock()
        arrival = max(self._arrivals.get(key, now), now)
        if arrival - now <= self._tolerance:
            self._arrivals[key] = arrival + self._interval
            if len(self._arrivals) > self._sweep_at:
                self._sweep(now)

    def _sweep(self, now: float) -> None:
        self._arrivals = {k: t for k, t in self._arrivals.items() if t > now}
        excess = len(self._arrivals) - self._max_keys
        if excess > 0:  # the oldest keys first (insertion order)
            for key in list(itertools.islice(self._arrivals, excess)):
                del self._arrivals[key]
        self._sweep_at = min(max(SWEEP_AT_LEAST, 2 * len(self._arrivals)), self._max_keys)

    def take(self, request: web.Request, key: str) -> None:
        """Count one for `key`; 429 when its bucket is full."""
        if self.full(key):
            raise self.refusal(request)
        self.count(key)

    def refusal(self, request: web.Request) -> ApiError:
        THROTTLED.labels(route_label(request), self._reason).inc()
        return ApiError(
            429,
            "too_many_requests",
            "too many requests; retry later",
            headers={"Retry-After": self._retry_after},
        )


class RateLimits:
    """The gateway's two limits."""

    def __init__(self, settings: Settings) -> None:
        self.writes = Limiter(
            settings.rate_limit_burst, settings.rate_limit_per_second, "client_rate"
        )
        self.auth_failures = Limiter(
            settings.auth_failure_burst, settings.auth_failure_per_second, "auth_failures"
        )


RATE_LIMITS = web.AppKey("rate_limits", RateLimits)


def limit_client_writes(request: web.Request, kind: str, client_id: str) -> None:
    """429 once this client id wrote more than its share (per kind: custodian and client)."""
    limits = request.app.get(RATE_LIMITS)
    if limits is not None:
        limits.writes.take(request, f"{kind}\x00{client_id}")


def _address_key(request: web.Request) -> str:
    address = caller_address(request)
    return str(address) if address is not None else "unknown"


def refuse_if_failing_auth(request: web.Request) -> None:
    """429 before anything else while this address's failed authentications are over its limit."""
    limits = request.app.get(RATE_LIMITS)
    # No address has failed lately (as a rule): then none is over, and its key is not worked out.
    if limits is None or len(limits.auth_failures) == 0:
        return
    if limits.auth_failures.full(_address_key(request)):
        raise limits.auth_failures.refusal(request)


def count_failed_auth(request: web.Request) -> None:
    limits = request.app.get(RATE_LIMITS)
    if limits is not None:
        limits.auth_failures.count(_address_key(request))
