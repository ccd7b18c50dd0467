"""Serving the gateway: aiohttp's runner, except that requests too malformed to reach the app
(oversized or broken headers) also get the JSON error shape, and no request bytes are logged."""

from __future__ import annotations

import asyncio
import logging
import signal

from aiohttp import web
from aiohttp.web_protocol import RequestHandler
from aiohttp.web_request import BaseRequest

from sharevault.service.errors import error_response

log = logging.getLogger(__name__)

_CODES = {400: "bad_request", 413: "body_too_large", 431: "headers_too_large"}


class _JsonErrorHandler(RequestHandler):
    def handle_error(
        self,
        request: BaseRequest,
        status: int = 500,
        exc: BaseException | None = None,
        message: str | None = None,
    ) -> web.StreamResponse:
        # aiohttp's own message quotes the offending bytes (a header may hold a token): the
        # type of the error is all that is logged, and nothing of the request is echoed back.
        log.warning(
            "rejected a malformed HTTP request from %s: %s (%d)",
            request.remote,
            type(exc).__name__ if exc else "error",
            status,
        )
        if request.writer.output_size > 0:
            raise ConnectionError("response already started; closing the connection")
        if status >= 500:
            response = error_response(status, "internal_error", "internal error")
        else:
            response = error_response(
                status, _CODES.get(status, "bad_request"), "malformed or oversized HTTP request"
            )
        response.force_close()
        return response


class _JsonErrorServer(web.Server):
    def __call__(self) -> RequestHandler:
        return _JsonErrorHandler(self, loop=self._loop, **self._kwargs)


class GatewayRunner(web.AppRunner):
    """An AppRunner whose connections answer protocol-level errors in JSON."""

    async def _make_server(self) -> web.Server:
        server = await super()._make_server()
        server.__class__ = _JsonErrorServer
        return server


async def serve(app: web.Application, host: str, port: int) -> None:
    """Serve until SIGTERM/SIGINT, then shut down gracefully (in-flight requests finish)."""
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(sig, stop.set)
    runner = GatewayRunner(app)
    await runner.setup()
    try:
        await web.TCPSite(runner, host, port).start()
        await stop.wait()
    finally:
        await runner.cleanup()
