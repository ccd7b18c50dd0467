"""Coalescing: shares accepted within a millisecond or two travel as one broker message.

Every share waits for the confirm of the message that carries it, so a 2xx still means the broker
holds the share durably; the broker and the worker pay their per-message costs once per batch."""

from __future__ import annotations

import asyncio
import contextlib
import uuid
from collections.abc import Awaitable, Callable, Mapping
from dataclasses import dataclass
from typing import Any, Protocol

from sharevault.schemas import ShareMessage
from sharevault.schemas.message import (
    BATCH_CONTENT_TYPE,
    SHARES_HEADER,
    SINGLE_CONTENT_TYPE,
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
        content_type: str | None = SINGLE_CONTENT_TYPE,
    ) -> Awaitable[None]: ...


@dataclass(frozen=True)
class Coalescing:
    """How long a share may wait for company, and how big a batch may grow."""

    linger: float = 0.001
    max_shares: int = 32
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
        routing_key: str,
        coalescing: Coalescing,
        stopped: Callable[[], Exception],
    ) -> None:
        self._publish = publish
        self._stopped = stopped  # what a share's publish raises when sending was cancelled
        self._routing_key = routing_key
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
        elif self._timer is None:
            loop = asyncio.get_running_loop()
            if self._options.linger > 0:
                self._timer = loop.call_later(self._options.linger, self._flush)
            else:
                self._timer = loop.call_soon(self._flush)
        await entry.future

    def _flush(self) -> None:
        if self._timer is not None:
            self._timer.cancel()
            self._timer = None
        batch, self._pending, self._bytes = self._pending, [], 0
        if batch:
            task = asyncio.create_task(self._send(batch), name="coalesced-publish")
            self._sending.add(task)
            task.add_done_callback(self._sending.discard)

    async def _send_one(self, body: bytes, message: ShareMessage, timeout: float) -> None:
        await self._publish(
            body,
            message_id=message.message_id,
            routing_key=self._routing_key,
            timeout=timeout,
            headers=message.context,
        )

    async def _send(self, batch: list[_Entry]) -> None:
        try:
            if len(batch) == 1:
                await self._send_one(batch[0].body, batch[0].message, batch[0].timeout)
            else:
                await self._publish(
                    encode_batch([entry.body for entry in batch]),
                    message_id=uuid.uuid4().hex,
                    routing_key=self._routing_key,
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
