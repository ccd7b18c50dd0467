"""Commit notices: the payloads the write path NOTIFYs, and the connection LISTENing for them."""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Awaitable, Callable, Iterable

import asyncpg
from asyncpg import Record
from tenacity import AsyncRetrying, RetryCallState, retry_if_exception_type, wait_random_exponential

from sharevault.db.errors import TRANSIENT_ERRORS

log = logging.getLogger(__name__)

COMMIT_CHANNEL = "sharevault_committed"
# PostgreSQL refuses a NOTIFY payload of 8000 bytes or more (server encoding; our ids are ASCII).
NOTIFY_PAYLOAD_LIMIT = 7999
RECONNECT_MAX = 5.0  # seconds between attempts to reconnect, at most (jittered, growing)


def _retrying(state: RetryCallState) -> None:
    exc = state.outcome.exception() if state.outcome is not None else None
    log.warning(
        "commit listener: database unreachable (%s), retrying in %.1fs",
        type(exc).__name__,
        state.upcoming_sleep,
    )


# A refusal notice: "refused:<reason>:<ids>", e.g. refused:methods_per_client:3f2a…,9b1c…; a
# commit notice is the ids alone (message ids are hex: neither holds a colon).
REFUSED = "refused:"


def notice_payloads(
    message_ids: Iterable[str], limit: int = NOTIFY_PAYLOAD_LIMIT, *, prefix: str = ""
) -> list[str]:
    """The ids joined by commas into as few payloads as fit, none of more than `limit` bytes,
    each after `prefix`."""
    payloads: list[str] = []
    current: list[str] = []
    limit -= len(prefix.encode())
    size = 0
    for message_id in message_ids:
        length = len(message_id.encode())
        if current and size + 1 + length > limit:
            payloads.append(",".join(current))
            current, size = [], 0
        size += length + (1 if current else 0)
        current.append(message_id)
    if current:
        payloads.append(",".join(current))
    return [prefix + payload for payload in payloads] if prefix else payloads


def refusal_payloads(reason: str, message_ids: Iterable[str]) -> list[str]:
    """Notices that the database refused these messages for `reason` (they are dead-lettered)."""
    return notice_payloads(message_ids, prefix=f"{REFUSED}{reason}:")


class CommitListener:
    """A dedicated connection LISTENing for commit notices; reconnects by itself."""

    def __init__(
        self,
        dsn: str,
        on_committed: Callable[[list[str]], None],
        on_refused: Callable[[str, list[str]], None],
        on_reconnect: Callable[[], Awaitable[None]],
        *,
        connect_timeout: float = 5.0,
    ) -> None:
        self._dsn = dsn
        self._connect_timeout = connect_timeout
        self._on_committed = on_committed
        self._on_refused = on_refused
        self._on_reconnect = on_reconnect
        self._task: asyncio.Task[None] | None = None
        self.connected = asyncio.Event()

    def _notified(self, _conn: object, _pid: int, _channel: str, payload: object) -> None:
        text = str(payload)
        if text.startswith(REFUSED):
            reason, _, ids = text[len(REFUSED) :].partition(":")
            self._on_refused(reason, ids.split(","))
        else:
            self._on_committed(text.split(","))

    async def _run(self) -> None:
        while True:
            async for attempt in AsyncRetrying(
                retry=retry_if_exception_type(TRANSIENT_ERRORS),
                wait=wait_random_exponential(multiplier=0.2, max=RECONNECT_MAX),
                before_sleep=_retrying,
            ):
                with attempt:
                    conn = await self._connect()
            closed = asyncio.Event()
            conn.add_termination_listener(_setter(closed))
            try:
                self.connected.set()
                # Notices sent while we were away are lost: let waiters re-check the table.
                await self._on_reconnect()
                await closed.wait()
                log.warning("commit listener: connection lost, reconnecting")
            except TRANSIENT_ERRORS as exc:
                log.warning("commit listener: %s, reconnecting", type(exc).__name__)
            finally:
                self.connected.clear()
                conn.terminate()

    async def _connect(self) -> asyncpg.Connection[Record]:
        conn = None
        try:
            # asyncio.timeout too: asyncpg's covers the connect, not the LISTEN after it.
            async with asyncio.timeout(self._connect_timeout):
                conn = await asyncpg.connect(self._dsn, timeout=self._connect_timeout)
                await conn.add_listener(COMMIT_CHANNEL, self._notified)
        except BaseException:
            if conn is not None:
                conn.terminate()
            raise
        return conn

    async def __aenter__(self) -> CommitListener:
        self._task = asyncio.create_task(self._run(), name="commit-listener")
        return self

    async def __aexit__(self, *exc: object) -> None:
        if self._task is not None:
            self._task.cancel()
            await asyncio.gather(self._task, return_exceptions=True)


def _setter(event: asyncio.Event) -> Callable[[object], None]:
    return lambda _conn: event.set()
