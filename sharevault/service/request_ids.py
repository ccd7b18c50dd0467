"""Request ids: taken from `X-Request-Id` (or made), echoed back, and put on every log record;
a W3C `traceparent` is accepted and kept for propagation."""

from __future__ import annotations

from aiohttp import web

from sharevault.logs import new_request_id, valid_traceparent

REQUEST_ID_HEADER = "X-Request-Id"
REQUEST_ID = web.RequestKey("request_id", str)
TRACEPARENT = web.RequestKey("traceparent", str)


def take_request_id(request: web.Request) -> str:
    """The request's id (the caller's when sane, else a fresh one), kept on the request along
    with a valid `traceparent`; the gateway's middleware echoes it and puts it on log records."""
    headers = request.headers
    request_id = new_request_id(headers.get(REQUEST_ID_HEADER))
    request[REQUEST_ID] = request_id
    traceparent = valid_traceparent(headers.get("traceparent"))
    if traceparent:
        request[TRACEPARENT] = traceparent
    return request_id


def propagation_headers(request: web.Request) -> dict[str, str]:
    """What travels with a message so that the worker and Portal calls log the same ids."""
    headers = {"x-request-id": request[REQUEST_ID]} if REQUEST_ID in request else {}
    if TRACEPARENT in request:
        headers["traceparent"] = request[TRACEPARENT]
    return headers
