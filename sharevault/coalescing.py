"""Coalescing: shares accepted together travel as one broker message.

Group commit, as databases do it: while `in_flight` messages await their confirm, shares that
arrive wait and then go together in the next message. An idle gateway sends each share at once;
a busy one sends bigger batches, as many as arrive during a confirm round trip. Every share waits
for the confirm of the message that carries it, so a 2xx still means the broker holds the share
durably; the broker and the worker pay their per-message costs once per batch."""

from __future__ import annotations

import asyncio
import contextlib
import uuid
from collections.abc import Awaitable, Callable, Mapping
from dataclasses import dataclass
from typing import Any, Protocol

from sharevault.messages import (
    BATCH_CONTENT_TYPE,
    SHARES_HEADER,
    SINGLE_CONTENT_TYPE,
    ShareMessage,
    encode_batch,
)


class PublishRaw(Protocol):
    def __call__(
        self,
        body: bytes,
        *,
        message_id: str,
        routing_key: str,
        timeout: float,
        headers: Mapping[str, Any] | None = None,
        content_type: str | None,
    ) -> Awaitable[None]: ...


@dataclass(frozen=True)
class Coalescing:
    """When a batch goes, and how big it may grow."""

    linger: float = 0.0  # seconds a share waits for company even with nothing in flight
    in_flight: int = 2  # messages awaiting their confirm before shares wait for one of them
    max_shares: int = 64  # a full batch goes at once, in flight or not
    max_bytes: int = 1024 * 1024


@dataclass(frozen=True, slots=True)
class _Entry:
    body: bytes
    message: ShareMessage
    timeout: float
    future: asyncio.Future[None]


class Coalescer:
    """Gathers shares for `linger` seconds (or until a batch is full), publishes them as one
    message, and resolves each share's publish with that message's confirm or failure."""

    def __init__(
        self,
        publish: PublishRaw,
        routing_key: Callable[[], str],
        coalescing: Coalescing,
        stopped: Callable[[], Exception],
    ) -> None:
        self._publish = publish
        self._stopped = stopped  # what a share's publish raises when sending was cancelled
        self._routing_key = routing_key  # asked as each message goes (the route may change)
        self._options = coalescing
        self._pending: list[_Entry] = []
        self._bytes = 0
        self._timer: asyncio.TimerHandle | asyncio.Handle | None = None
        self._sending: set[asyncio.Task[None]] = set()

    async def publish(self, message: ShareMessage, *, timeout: float) -> None:
        """Return once the broker confirmed the message carrying this share; raise as the
        publish of that message raised (BrokerUnavailable)."""
        body = message.encode()
        if self._options.max_shares <= 1:
            await self._send_one(body, message, timeout)
            return
        if self._pending and self._bytes + len(body) > self._options.max_bytes:
            self._flush()
        entry = _Entry(body, message, timeout, asyncio.get_running_loop().create_future())
        self._pending.append(entry)
        self._bytes += len(body)
        if len(self._pending) >= self._options.max_shares or self._bytes >= self._options.max_bytes:
            self._flush()
        else:
            self._schedule()
        await entry.future

    def _schedule(self) -> None:
        """Send what waits soon, unless enough is in flight: then a confirm sends it."""
        if self._timer is not None or not self._pending:
            return
        if len(self._sending) >= self._options.in_flight:
            return
        loop = asyncio.get_running_loop()
        if self._options.linger > 0:
            self._timer = loop.call_later(self._options.linger, self._flush)
        else:
            # Still gathers the shares accepted in the same pass of the event loop.
            self._timer = loop.call_soon(self._flush)

    def _sent(self, task: asyncio.Task[None]) -> None:
        self._sending.discard(task)
        self._schedule()

    def _flush(self) -> None:
        if self._timer is not None:
            self._timer.cancel()
            self._timer = None
        batch, self._pending, self._bytes = self._pending, [], 0
        if batch:
            task = asyncio.create_task(self._send(batch), name="coalesced-publish")
            self._sending.add(task)
            task.add_done_callback(self._sent)

    async def _send_one(self, body: bytes, message: ShareMessage, timeout: float) -> None:
        await self._publish(
            body,
            message_id=message.message_id,
            routing_key=self._routing_key(),
            timeout=timeout,
            headers=message.context,
            content_type=SINGLE_CONTENT_TYPE,
        )

    async def _send(self, batch: list[_Entry]) -> None:
        try:
            if len(batch) == 1:
                await self._send_one(batch[0].body, batch[0].message, batch[0].timeout)
            else:
                await self._publish(
                    encode_batch([entry.body for entry in batch]),
                    message_id=uuid.uuid4().hex,
                    routing_key=self._routing_key(),
                    timeout=max(entry.timeout for entry in batch),
                    headers={SHARES_HEADER: len(batch)},
                    content_type=BATCH_CONTENT_TYPE,
                )
        except BaseException as exc:
            for entry in batch:
                if not entry.future.done():
                    entry.future.set_exception(
                        exc if isinstance(exc, Exception) else self._stopped()
                    )
            if not isinstance(exc, Exception):
                raise
        else:
            for entry in batch:
                if not entry.future.done():
                    entry.future.set_result(None)

    async def close(self, timeout: float) -> None:
        """Send what is gathered and wait (bounded) for the batches on their way."""
        self._flush()
        if self._sending:
            with contextlib.suppress(TimeoutError):
                async with asyncio.timeout(timeout):
                    await asyncio.gather(*self._sending, return_exceptions=True)
