"""Slow and greedy callers, per gateway process (docs/operations.md, "Security").

- Slow headers and idle keep-alive: aiohttp's keep-alive timer runs from a connection's opening
  and from each answer, and closes the connection when no complete request has arrived by then:
  `IDLE_TIMEOUT` is that timer (a client trickling header bytes does not move it).
- Slow bodies: `read_body` gives the body `BODY_TIMEOUT` once the headers are in, then 408 and the
  connection closes.
- Too many connections (`MAX_CONNECTIONS`): the connection beyond is answered 503 + Retry-After
  at once and closed (`refuse_connection`, called by server.py's protocol handler).
- Too many requests in flight (`MAX_IN_FLIGHT`): 503 + Retry-After at once (`admitted`).
"""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable, Callable

from aiohttp import web

from sharevault.metrics import THROTTLED
from sharevault.schemas.errors import ErrorBody, ErrorDetail
from sharevault.service.errors import ApiError
from sharevault.service.monitoring import route_label

Handler = Callable[[web.Request], Awaitable[web.StreamResponse]]

RETRY_AFTER = "1"


class InFlight:
    """Requests this process is handling, against its cap."""

    def __init__(self, limit: int) -> None:
        self.limit = limit
        self.count = 0


IN_FLIGHT = web.AppKey("in_flight", InFlight)


def overloaded(what: str) -> ApiError:
    return ApiError(
        503, "overloaded", f"too many {what}; retry shortly", headers={"Retry-After": RETRY_AFTER}
    )


async def admitted(request: web.Request, handler: Handler) -> web.StreamResponse:
    """The handler's answer, unless MAX_IN_FLIGHT requests are being handled already: then 503."""
    in_flight = request.app.get(IN_FLIGHT)
    if in_flight is None:
        return await handler(request)
    if in_flight.count >= in_flight.limit:
        THROTTLED.labels(route_label(request), "in_flight").inc()
        raise overloaded("requests in flight")
    in_flight.count += 1
    try:
        return await handler(request)
    finally:
        in_flight.count -= 1


async def read_body(request: web.Request, seconds: float) -> bytes:
    """The whole body, or 408 (and the connection closed) when it takes longer than `seconds`."""
    if request.content.is_eof():
        # All of it arrived with the headers (as a share's 8 KB mostly does): no timer to arm.
        return await request.read()
    try:
        async with asyncio.timeout(seconds):
            return await request.read()
    except TimeoutError:
        THROTTLED.labels(route_label(request), "body_timeout").inc()
        # What is left of the body must not be read as the next request: the answer closes.
        raise ApiError(
            408,
            "body_timeout",
            f"the request body did not arrive within {seconds:g}s",
            headers={"Connection": "close"},
        ) from None


def _canned_refusal() -> bytes:
    body = ErrorBody(
        error=ErrorDetail(code="overloaded", message="too many connections; retry shortly")
    ).model_dump_json()
    head = (
        "HTTP/1.1 503 Service Unavailable\r\n"
        "Content-Type: application/json\r\n"
        f"Content-Length: {len(body)}\r\n"
        f"Retry-After: {RETRY_AFTER}\r\n"
        "Connection: close\r\n\r\n"
    )
    return (head + body).encode()


REFUSAL = _canned_refusal()


def refuse_connection(transport: asyncio.Transport) -> None:
    """Answer a connection beyond MAX_CONNECTIONS with 503 at once, unread, and close it."""
    THROTTLED.labels("connection", "connections").inc()
    transport.write(REFUSAL)
    transport.close()
