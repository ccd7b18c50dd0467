"""Every error leaves as `{"error": {"code", "message"}}`; nothing secret ever goes into one."""

from __future__ import annotations

import logging
from collections.abc import Awaitable, Callable

from aiohttp import web

from sharevault.broker import BrokerUnavailable
from sharevault.schemas import ErrorBody, ErrorDetail
from sharevault.store import TRANSIENT_ERRORS

log = logging.getLogger(__name__)

Handler = Callable[[web.Request], Awaitable[web.StreamResponse]]


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


@web.middleware
async def error_middleware(request: web.Request, handler: Handler) -> web.StreamResponse:
    """Turn every failure into the JSON error shape; a 5xx only when something of ours is down."""
    try:
        return await handler(request)
    except ApiError as exc:
        return error_response(exc.status, exc.code, exc.message, exc.headers)
    except web.HTTPException as exc:
        if exc.status < 400:
            raise
        code = _HTTP_CODES.get(exc.status, "http_error")
        # 405 must keep its Allow header (RFC 9110).
        kept = {k: v for k, v in exc.headers.items() if k in ("Allow", "Retry-After")}
        return error_response(exc.status, code, exc.reason, kept)
    except BrokerUnavailable:
        log.warning("broker unavailable for %s %s", request.method, request.path)
        exc503 = unavailable("broker_unavailable", "the queue did not confirm; retry shortly")
        return error_response(exc503.status, exc503.code, exc503.message, exc503.headers)
    except TRANSIENT_ERRORS as exc:
        log.warning(
            "database unavailable for %s %s (%s)", request.method, request.path, type(exc).__name__
        )
        exc503 = unavailable("database_unavailable", "storage is unreachable; retry shortly")
        return error_response(exc503.status, exc503.code, exc503.message, exc503.headers)
    except Exception:
        log.exception("unhandled error in %s %s", request.method, request.path)
        return error_response(500, "internal_error", "internal error")
