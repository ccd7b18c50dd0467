"""Hop times of each share on its way (SHAREVAULT_HOP_TRACE=<directory>), for the bench's latency
budget. Off (the default), every hook is one test of a module constant; on, each process appends
one tab-separated line per share to `<directory>/<role>-<pid>.tsv`: message id and wall-clock
stamps, nothing else (never a client id or a share)."""

from __future__ import annotations

import atexit
import os
import time
from collections.abc import Awaitable, Callable, Iterable
from contextvars import ContextVar
from pathlib import Path
from typing import IO, Any

from aiohttp import web

DIRECTORY = os.environ.get("SHAREVAULT_HOP_TRACE") or None
ON = DIRECTORY is not None
# Gateway stamps of one request, in order: start, accept, sealed, confirmed, seen, end.
_STAMPS: ContextVar[list[Any] | None] = ContextVar("hop_stamps", default=None)
_FLUSH_EVERY = 256


class _Trace:
    """Lines of one process, written in chunks (a write per request would cost more)."""

    def __init__(self, role: str) -> None:
        path = Path(DIRECTORY or ".") / f"{role}-{os.getpid()}.tsv"
        self._file: IO[str] = path.open("a", encoding="ascii")
        self._lines: list[str] = []
        atexit.register(self.flush)

    def add(self, *fields: object) -> None:
        self._lines.append("\t".join(map(str, fields)) + "\n")
        if len(self._lines) >= _FLUSH_EVERY:
            self.flush()

    def flush(self) -> None:
        self._file.writelines(self._lines)
        self._file.flush()
        self._lines.clear()


_traces: dict[str, _Trace] = {}


def _trace(role: str) -> _Trace:
    if role not in _traces:
        _traces[role] = _Trace(role)
    return _traces[role]


Handler = Callable[[web.Request], Awaitable[web.StreamResponse]]


@web.middleware
async def middleware(request: web.Request, handler: Handler) -> web.StreamResponse:
    """Installed only when ON: stamps a request's start and end around the other stamps."""
    stamps: list[Any] = [time.time()]
    token = _STAMPS.set(stamps)
    try:
        response = await handler(request)
    finally:
        _STAMPS.reset(token)
    if len(stamps) == 6:  # a share was accepted: start + accept, sealed, confirmed, seen + id
        message_id = stamps.pop()
        _trace("gateway").add(message_id, *(f"{t:.6f}" for t in stamps), f"{time.time():.6f}")
    return response


def mark(message_id: str | None = None) -> None:
    """The next gateway stamp of this request (accept, sealed, confirmed, seen: the last one
    names the message)."""
    stamps = _STAMPS.get()
    if stamps is not None:
        stamps.append(time.time())
        if message_id is not None:
            stamps.append(message_id)


_delivered: dict[int, float] = {}


def delivered(delivery: object) -> None:
    """The worker received this delivery."""
    if len(_delivered) > 100_000:  # deliveries never stored (dead-lettered, handed back)
        _delivered.clear()
    _delivered[id(delivery)] = time.time()


def stored(shares: Iterable[tuple[str, object]], commit_started: float) -> None:
    """The worker stored these (message id, delivery) pairs; writing them began at
    `commit_started` (perf_counter)."""
    now = time.time()
    began = now - (time.perf_counter() - commit_started)
    trace = _trace("worker")
    done = set()
    for message_id, delivery in shares:
        got = _delivered.get(id(delivery), began)
        done.add(id(delivery))
        trace.add(message_id, f"{got:.6f}", f"{began:.6f}", f"{now:.6f}")
    for key in done:
        _delivered.pop(key, None)
