"""Logging: JSON lines when not on a terminal, readable lines on one; a request id on every record
logged while a request (or the message it produced) is being handled."""

from __future__ import annotations

import contextvars
import logging
import os
import re
import sys
from collections.abc import Iterator
from contextlib import contextmanager

from pythonjsonlogger.json import JsonFormatter

REQUEST_ID: contextvars.ContextVar[str] = contextvars.ContextVar("request_id", default="-")
_VALID_ID = re.compile(r"^[A-Za-z0-9._:\-]{1,128}$")
# W3C trace context: version-traceid-parentid-flags.
_TRACEPARENT = re.compile(r"^[0-9a-f]{2}-[0-9a-f]{32}-[0-9a-f]{16}-[0-9a-f]{2}$")


def new_request_id(offered: str | None = None) -> str:
    """The caller's id when it is sane (it ends up in logs and headers), else a fresh one."""
    if offered and _VALID_ID.match(offered):
        return offered
    # 32 hex digits like uuid4().hex, at a third of its cost: it is made for every request.
    return os.urandom(16).hex()


def valid_traceparent(value: str | None) -> str | None:
    return value if value and _TRACEPARENT.match(value) else None


@contextmanager
def request_context(request_id: str) -> Iterator[None]:
    token = REQUEST_ID.set(request_id)
    try:
        yield
    finally:
        REQUEST_ID.reset(token)


_base_factory = logging.getLogRecordFactory()


def _record_with_request_id(*args: object, **kwargs: object) -> logging.LogRecord:
    record = _base_factory(*args, **kwargs)
    record.request_id = REQUEST_ID.get()
    return record


def install_request_ids() -> None:
    """Every record created from now on carries the request id of its context (idempotent)."""
    logging.setLogRecordFactory(_record_with_request_id)


def setup_logging(level: str = "INFO", fmt: str = "auto", *, with_pid: bool = False) -> None:
    """Configure the root logger once, for the process's entry point (`with_pid`: one of several
    gateway processes, each line says which)."""
    handler = logging.StreamHandler(sys.stderr)
    as_json = fmt == "json" or (fmt == "auto" and not sys.stderr.isatty())
    formatter: logging.Formatter
    if as_json:
        formatter = JsonFormatter(
            "%(asctime)s %(levelname)s %(name)s %(message)s %(request_id)s"
            + (" %(process)d" if with_pid else ""),
            rename_fields={
                "asctime": "time",
                "levelname": "level",
                "name": "logger",
                "process": "pid",
            },
        )
    else:
        formatter = logging.Formatter(
            "%(asctime)s %(levelname)-7s %(name)s "
            + ("%(process)d " if with_pid else "")
            + "[%(request_id)s] %(message)s"
        )
    handler.setFormatter(formatter)
    install_request_ids()
    root = logging.getLogger()
    root.handlers[:] = [handler]
    root.setLevel(level.upper())
    # The access log is off unless `sharevault serve --access-log`; its record has the request id.
    logging.getLogger("aiohttp.access").setLevel(max(root.level, logging.INFO))
