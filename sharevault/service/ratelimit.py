"""Rate limits (docs/operations.md, "Security"): writes per client id, failed authentications per
source address. Each key has a leaky bucket (aiolimiter): a burst of `burst`, then `per_second`
on average; beyond → 429 + Retry-After. In-process, per gateway process: N processes (or N
gateways) give N times the limit.

An idle key's bucket is empty again after burst / per_second seconds: that is when it is
forgotten (a TTL cache), and at most MAX_KEYS keys are held (the oldest go first, then start with
a fresh bucket): memory stays bounded whatever the callers send."""

from __future__ import annotations

import math

from aiohttp import web
from aiolimiter import AsyncLimiter
from cachetools import TTLCache

from sharevault.config import Settings
from sharevault.metrics import THROTTLED
from sharevault.service.errors import ApiError
from sharevault.service.ipfilter import caller_address
from sharevault.service.monitoring import route_label

MAX_KEYS = 200_000


class Limiter:
    """Leaky buckets by key; `burst` 0: no limit."""

    def __init__(self, burst: int, per_second: float, reason: str, max_keys: int = MAX_KEYS):
        self._burst = burst
        self._period = burst / per_second if burst else 0.0
        self._buckets: TTLCache[str, AsyncLimiter] = TTLCache(
            maxsize=max_keys, ttl=max(self._period, 1.0)
        )
        self._retry_after = str(max(1, math.ceil(1 / per_second)))
        self._reason = reason

    @property
    def on(self) -> bool:
        return self._burst > 0

    def _bucket(self, key: str) -> AsyncLimiter:
        bucket = self._buckets.get(key)
        if bucket is None:
            bucket = self._buckets[key] = AsyncLimiter(self._burst, self._period)
        return bucket

    def full(self, key: str) -> bool:
        return self.on and not self._bucket(key).has_capacity()

    async def count(self, key: str) -> None:
        """One more for `key`, if its bucket has room (never waits)."""
        if self.on:
            bucket = self._bucket(key)
            if bucket.has_capacity():
                await bucket.acquire()  # has room: returns at once

    async def take(self, request: web.Request, key: str) -> None:
        """Count one for `key`; 429 when its bucket is full."""
        if self.full(key):
            raise self.refusal(request)
        await self.count(key)

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


async def limit_client_writes(request: web.Request, kind: str, client_id: str) -> None:
    """429 once this client id wrote more than its share (per kind: custodian and client)."""
    limits = request.app.get(RATE_LIMITS)
    if limits is not None:
        await limits.writes.take(request, f"{kind}\x00{client_id}")


def _address_key(request: web.Request) -> str:
    address = caller_address(request)
    return str(address) if address is not None else "unknown"


def refuse_if_failing_auth(request: web.Request) -> None:
    """429 before anything else while this address's failed authentications are over its limit."""
    limits = request.app.get(RATE_LIMITS)
    if limits is not None and limits.auth_failures.full(_address_key(request)):
        raise limits.auth_failures.refusal(request)


async def count_failed_auth(request: web.Request) -> None:
    limits = request.app.get(RATE_LIMITS)
    if limits is not None:
        await limits.auth_failures.count(_address_key(request))
