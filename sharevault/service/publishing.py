"""The gateway's publishing of shares over the broker's Publisher: coalescing and the detour.

Coalescing: shares accepted together travel as one broker message.

Group commit, as databases do it: while `in_flight` messages await their confirm, shares that
arrive wait and then go together in the next message; while fewer are in flight, they wait up to
`linger` for company. An idle gateway (nothing in flight) sends each share at once; a busy one
sends bigger batches, as many as arrive during a confirm round trip. Every share waits
for the confirm of the message that carries it, so a 2xx still means the broker holds the share
durably; the broker and the worker pay their per-message costs once per batch.

The detour (`Route`): while no worker consumes the live queue, new shares go straight to the
backlog queue (and the journal, as ever): they would only wait out the live TTL there and move to
the backlog anyway, and that move (at-least-once dead-lettering) costs the broker a second durable
write of every share, just when it is under the most strain. Shares are as durable on either
route; workers drain both, live first."""

from __future__ import annotations

import asyncio
import contextlib
import logging
import uuid
from dataclasses import dataclass
from typing import TYPE_CHECKING

from sharevault.broker import Admin, BrokerUnavailable, Publisher
from sharevault.messages import BACKLOG_KEY, SHARE_KEY, Envelope, ShareMessage, batch_envelope
from sharevault.metrics import DETOUR

if TYPE_CHECKING:
    from sharevault.config import Settings

log = logging.getLogger(__name__)

LIVE_CHECK_TIMEOUT = 5.0  # a look at the live queue's consumers that takes longer is skipped
CLOSE_WAIT = 5.0  # seconds the gateway waits, stopping, for the batches on their way


class Route:
    """Where new shares go: the live queue, or the backlog while no worker consumes it."""

    def __init__(self, admin: Admin, live_queue: str) -> None:
        self._admin = admin
        self._queue = live_queue
        self.detoured = False

    @property
    def key(self) -> str:
        return BACKLOG_KEY if self.detoured else SHARE_KEY

    async def watch(self, every: float) -> None:
        """Forever (the gateway runs it): every `every` seconds, look whether any worker
        consumes the live queue, and route new shares accordingly."""
        while True:
            try:
                async with asyncio.timeout(LIVE_CHECK_TIMEOUT):
                    counts = await self._admin.queue_counts(self._queue)
            except (BrokerUnavailable, TimeoutError):
                pass  # the broker link is away: /readyz says so; keep the route we had
            else:
                self._set(counts is not None and counts[1] == 0)
            await asyncio.sleep(every)

    def _set(self, detoured: bool) -> None:
        if detoured == self.detoured:
            return
        self.detoured = detoured
        DETOUR.set(1 if detoured else 0)
        if detoured:
            log.warning("no worker consumes %s: new shares go to the backlog", self._queue)
        else:
            log.info("a worker consumes %s again: new shares go live", self._queue)


@dataclass(frozen=True)
class Coalescing:
    """When a batch goes, and how big it may grow."""

    linger: float = 0.0  # seconds a share waits for company while a message is in flight
    in_flight: int = 2  # messages awaiting their confirm before shares wait for one of them
    max_shares: int = 64  # a full batch goes at once, in flight or not
    max_bytes: int = 1024 * 1024


def coalescing_of(settings: Settings) -> Coalescing:
    """The coalescing these settings decide (PUBLISH_LINGER_MS, PUBLISH_IN_FLIGHT, PUBLISH_BATCH,
    PUBLISH_BATCH_BYTES)."""
    return Coalescing(
        linger=settings.publish_linger_ms / 1000,
        in_flight=settings.publish_in_flight,
        max_shares=settings.publish_batch,
        max_bytes=settings.publish_batch_bytes,
    )


@dataclass(frozen=True, slots=True)
class _Waiting:
    """One share gathered for the next message, and the future its publish awaits."""

    envelope: Envelope
    timeout: float
    future: asyncio.Future[None]


class Coalescer:
    """Gathers shares for `linger` seconds (or until a batch is full), publishes them as one
    message, and resolves each share's publish with that message's confirm or failure."""

    def __init__(self, publisher: Publisher, route: Route, coalescing: Coalescing) -> None:
        self._publisher = publisher
        self._route = route  # asked as each message goes (the route may change)
        self._options = coalescing
        self._pending: list[_Waiting] = []
        self._bytes = 0
        self._timer: asyncio.TimerHandle | asyncio.Handle | None = None
        self._sending: set[asyncio.Task[None]] = set()

    async def publish(self, message: ShareMessage, *, timeout: float) -> None:
        """Return once the broker confirmed the message carrying this share; raise as the
        publish of that message raised (BrokerUnavailable)."""
        envelope = message.envelope()
        if self._options.max_shares <= 1:
            await self._send_one(envelope, timeout)
            return
        size = len(envelope.body)
        if self._pending and self._bytes + size > self._options.max_bytes:
            self._flush()
        entry = _Waiting(envelope, timeout, asyncio.get_running_loop().create_future())
        self._pending.append(entry)
        self._bytes += size
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
        if self._options.linger > 0 and self._sending:
            # Company is likely only while another message is on its way: an idle gateway
            # does not make a lone share wait for it.
            self._timer = loop.call_later(self._options.linger, self._flush)
        else:
            # Still gathers the shares accepted in the same pass of the event loop.
            self._timer = loop.call_soon(self._flush)

    def _sent(self, task: asyncio.Task[None]) -> None:
        self._sending.discard(task)
        if not self._sending and self._pending:
            self._flush()  # nothing on its way any more: no company to wait for
        else:
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

    async def _send_one(self, envelope: Envelope, timeout: float) -> None:
        await self._publisher.publish(envelope, routing_key=self._route.key, timeout=timeout)

    async def _send(self, batch: list[_Waiting]) -> None:
        try:
            if len(batch) == 1:
                await self._send_one(batch[0].envelope, batch[0].timeout)
            else:
                bodies = [entry.envelope.body for entry in batch]
                await self._send_one(
                    batch_envelope(bodies, uuid.uuid4().hex), max(e.timeout for e in batch)
                )
        except BaseException as exc:
            stopped = BrokerUnavailable("publisher stopped before the confirm")
            for entry in batch:
                if not entry.future.done():
                    entry.future.set_exception(exc if isinstance(exc, Exception) else stopped)
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
