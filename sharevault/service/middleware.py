"""The gateway's one middleware: request id, JSON errors, request metrics.

One layer rather than three: each layer is a coroutine and a call per request, and the gateway's
CPU per request is its capacity. The parts live in `tracing.py`, `errors.py` and `metrics.py`."""

from __future__ import annotations

import time
from collections.abc import Awaitable, Callable

from aiohttp import web

from sharevault.logs import REQUEST_ID as LOG_REQUEST_ID
from sharevault.service.edge import admitted
from sharevault.service.errors import error_answer
from sharevault.service.monitoring import count_request
from sharevault.service.request_ids import REQUEST_ID_HEADER, take_request_id

Handler = Callable[[web.Request], Awaitable[web.StreamResponse]]


@web.middleware
async def gateway_middleware(request: web.Request, handler: Handler) -> web.StreamResponse:
    """Every answer echoes the request id and is counted with its real status; every failure
    leaves as the JSON error shape; every log line of the request carries its id."""
    started = time.perf_counter()
    request_id = take_request_id(request)
    token = LOG_REQUEST_ID.set(request_id)
    try:
        try:
            response = await admitted(request, handler)
        except web.HTTPException as exc:
            if exc.status >= 400:
                response = error_answer(request, exc)
            else:  # a redirect or the like: aiohttp sends it as it is
                exc.headers[REQUEST_ID_HEADER] = request_id
                count_request(request, exc.status, started)
                raise
        except Exception as exc:
            response = error_answer(request, exc)
        except BaseException:  # cancelled: counted as the server's failure, as before
            count_request(request, 500, started)
            raise
        response.headers[REQUEST_ID_HEADER] = request_id
        count_request(request, response.status, started)
        return response
    finally:
        LOG_REQUEST_ID.reset(token)
