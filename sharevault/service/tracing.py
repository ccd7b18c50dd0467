"""Request ids: taken from `X-Request-Id` (or made), echoed back, and put on every log record;
a W3C `traceparent` is accepted and kept for propagation."""

from __future__ import annotations

from aiohttp import web

from sharevault.logs import new_request_id, request_context, valid_traceparent
from sharevault.service.errors import Handler

REQUEST_ID_HEADER = "X-Request-Id"
REQUEST_ID = web.RequestKey("request_id", str)
TRACEPARENT = web.RequestKey("traceparent", str)


@web.middleware
async def request_id_middleware(request: web.Request, handler: Handler) -> web.StreamResponse:
    request_id = new_request_id(request.headers.get(REQUEST_ID_HEADER))
    request[REQUEST_ID] = request_id
    traceparent = valid_traceparent(request.headers.get("traceparent"))
    if traceparent:
        request[TRACEPARENT] = traceparent
    with request_context(request_id):
        try:
            response = await handler(request)
        except web.HTTPException as exc:
            exc.headers[REQUEST_ID_HEADER] = request_id
            raise
    response.headers[REQUEST_ID_HEADER] = request_id
    return response


def propagation_headers(request: web.Request) -> dict[str, str]:
    """What travels with a message so that the worker and Portal calls log the same ids."""
    headers = {"x-request-id": request[REQUEST_ID]} if REQUEST_ID in request else {}
    if TRACEPARENT in request:
        headers["traceparent"] = request[TRACEPARENT]
    return headers
