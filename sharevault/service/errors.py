"""Every error leaves as `{"error": {"code", "message"}}`; nothing secret ever goes into one."""

from __future__ import annotations

import logging

from aiohttp import web

from sharevault.broker import BrokerUnavailable
from sharevault.db import TRANSIENT_ERRORS
from sharevault.schemas import ErrorBody, ErrorDetail

log = logging.getLogger(__name__)


class ApiError(Exception):
    """An answer other than 2xx, with a stable machine code and a human message."""

    def __init__(
        self, status: int, code: str, message: str, *, headers: dict[str, str] | None = None
    ) -> None:
        super().__init__(message)
        self.status = status
        self.code = code
        self.message = message
        self.headers = headers or {}


def error_response(
    status: int, code: str, message: str, headers: dict[str, str] | None = None
) -> web.Response:
    body = ErrorBody(error=ErrorDetail(code=code, message=message))
    return web.Response(
        status=status,
        body=body.model_dump_json(),
        content_type="application/json",
        headers=headers,
    )


def unavailable(code: str, message: str) -> ApiError:
    return ApiError(503, code, message, headers={"Retry-After": "1"})


_HTTP_CODES = {
    404: "not_found",
    405: "method_not_allowed",
    413: "body_too_large",
    415: "unsupported_media_type",
}


def error_answer(request: web.Request, exc: Exception) -> web.Response:
    """The JSON answer to a failure; a 5xx only when something of ours is down (or a bug).
    An HTTPException below 400 (a redirect) is not a failure: the caller lets it through."""
    if isinstance(exc, ApiError):
        response = error_response(exc.status, exc.code, exc.message, exc.headers)
        if exc.headers.get("Connection") == "close":
            response.force_close()  # e.g. a body cut short: its rest must not be read as a request
        return response
    if isinstance(exc, web.HTTPException):
        code = _HTTP_CODES.get(exc.status, "http_error")
        # 405 must keep its Allow header (RFC 9110).
        kept = {k: v for k, v in exc.headers.items() if k in ("Allow", "Retry-After")}
        return error_response(exc.status, code, exc.reason, kept)
    if isinstance(exc, BrokerUnavailable):
        log.warning("broker unavailable for %s %s (%s)", request.method, request.path, exc)
        down = unavailable("broker_unavailable", "the queue did not confirm; retry shortly")
        return error_response(down.status, down.code, down.message, down.headers)
    if isinstance(exc, TRANSIENT_ERRORS):
        log.warning(
            "database unavailable for %s %s (%s)", request.method, request.path, type(exc).__name__
        )
        down = unavailable("database_unavailable", "storage is unreachable; retry shortly")
        return error_response(down.status, down.code, down.message, down.headers)
    log.error("unhandled error in %s %s", request.method, request.path, exc_info=exc)
    return error_response(500, "internal_error", "internal error")
