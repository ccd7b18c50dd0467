"""Serving the gateway: aiohttp's runner, except that requests too malformed to reach the app
(oversized or broken headers) also get the JSON error shape, and no request bytes are logged."""

from __future__ import annotations

import asyncio
import gc
import logging
import signal
from typing import Any, cast

from aiohttp import web
from aiohttp.web_log import AccessLogger
from aiohttp.web_protocol import RequestHandler
from aiohttp.web_request import BaseRequest

from sharevault.logs import REQUEST_ID as LOG_REQUEST_ID
from sharevault.service.appkeys import SETTINGS
from sharevault.service.edge import refuse_connection
from sharevault.service.errors import error_response
from sharevault.service.request_ids import REQUEST_ID_HEADER

log = logging.getLogger(__name__)

_CODES = {400: "bad_request", 413: "body_too_large", 431: "headers_too_large"}


class _JsonErrorHandler(RequestHandler):
    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        super().connection_made(transport)
        manager = self._manager
        cap = getattr(manager, "max_connections", None)
        if cap is not None and manager is not None and len(manager.connections) > cap:
            self._force_close = True  # the request loop ends without reading anything
            refuse_connection(cast(asyncio.Transport, transport))

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
    max_connections: int | None = None

    def __call__(self) -> RequestHandler:
        return _JsonErrorHandler(self, loop=self._loop, **self._kwargs)


LINGERING_TIME = 1.0


class GatewayRunner(web.AppRunner):
    """An AppRunner whose connections answer protocol-level errors in JSON, close when a
    request's headers are slower than IDLE_TIMEOUT, and are refused beyond MAX_CONNECTIONS."""

    def __init__(self, app: web.Application, **kwargs: Any) -> None:
        settings = app[SETTINGS]
        # aiohttp's keep-alive timer also runs from a connection's opening: slow headers too.
        # After an answer sent before its body was read (413, 408), aiohttp reads on what the
        # client still sends for `lingering_time` (10 s by default) so that it sees the answer:
        # one second is enough for that, and is all a slow body may hold a connection past it.
        super().__init__(
            app,
            keepalive_timeout=settings.idle_timeout,
            lingering_time=LINGERING_TIME,
            **kwargs,
        )
        self._max_connections = settings.max_connections

    async def _make_server(self) -> web.Server:
        server = await super()._make_server()
        server.__class__ = _JsonErrorServer
        cast(_JsonErrorServer, server).max_connections = self._max_connections
        return server


# Young-generation collections after this many new objects (Python's default: 700); see serve().
GC_GEN0_THRESHOLD = 7_000
# Off unless asked (`sharevault serve --access-log`): a line per request is a tenth of the
# gateway's CPU.
ACCESS_LOG_FORMAT = '%a "%r" %s %b %Tf "%{User-Agent}i"'


class _AccessLogger(AccessLogger):
    """aiohttp's access log, whose record carries the request id like every other line (the
    request's own context has ended when aiohttp writes the line)."""

    def log(self, request: BaseRequest, response: web.StreamResponse, time: float) -> None:
        token = LOG_REQUEST_ID.set(response.headers.get(REQUEST_ID_HEADER, "-"))
        try:
            super().log(request, response, time)
        finally:
            LOG_REQUEST_ID.reset(token)


async def serve(
    app: web.Application,
    host: str,
    port: int,
    *,
    reuse_port: bool = False,
    access_log: bool = False,
) -> None:
    """Serve until SIGTERM/SIGINT, then shut down gracefully (in-flight requests finish).
    `reuse_port`: one of several processes accepting on the same port (SO_REUSEPORT)."""
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(sig, stop.set)
    runner = GatewayRunner(
        app,
        access_log=logging.getLogger("aiohttp.access") if access_log else None,
        access_log_class=_AccessLogger,
        access_log_format=ACCESS_LOG_FORMAT,
    )
    await runner.setup()
    try:
        await web.TCPSite(runner, host, port, reuse_port=reuse_port or None).start()
        # What start-up made (modules, app, connections) lives as long as the process: the
        # cyclic GC's full passes need not walk it again and again. Requests make next to no
        # cycles, yet many in flight hold more than 700 objects: at the default threshold the GC
        # ran every ~60 requests, finding nothing (~8 µs per request); at 7,000 it hardly runs.
        gc.freeze()
        gc.set_threshold(GC_GEN0_THRESHOLD, *gc.get_threshold()[1:])
        await stop.wait()
    finally:
        await runner.cleanup()
