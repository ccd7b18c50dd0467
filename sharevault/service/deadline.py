"""A request's deadline: REQUEST_BUDGET from its start, shared by every wait it makes."""

from __future__ import annotations

import asyncio
from dataclasses import dataclass

from aiohttp import web

from sharevault.service.appkeys import SETTINGS
from sharevault.service.errors import ApiError

# Seconds kept back from the budget for writing the answer once the last wait gave up.
ANSWER_MARGIN = 0.2


@dataclass(frozen=True, slots=True)
class Deadline:
    """A point on the event loop's clock; every wait takes at most what is `remaining()`."""

    at: float

    @classmethod
    def of(cls, request: web.Request) -> Deadline:
        """The deadline of a request starting now: REQUEST_BUDGET less the answer's margin."""
        budget = request.app[SETTINGS].request_budget
        return cls(asyncio.get_running_loop().time() + max(budget - ANSWER_MARGIN, 0.0))

    def remaining(self, cap: float | None = None) -> float:
        """Seconds left (never below 0), or `cap` if that is less."""
        left = max(self.at - asyncio.get_running_loop().time(), 0.0)
        return left if cap is None else min(left, cap)


def timed_out(what: str) -> ApiError:
    """The 503 a request answers when its deadline ran out waiting for `what`."""
    return ApiError(
        503,
        "timeout",
        f"{what} did not answer within the request budget; retry shortly",
        headers={"Retry-After": "1"},
    )
