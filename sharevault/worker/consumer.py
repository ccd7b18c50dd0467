"""The worker: consume sealed shares, upsert them in batches, ack only after commit."""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
from dataclasses import dataclass, replace

from aio_pika.abc import AbstractIncomingMessage
from pydantic import ValidationError

from sharevault import otel
from sharevault.broker import Broker, BrokerUnavailable, Consuming, Lane, is_stale
from sharevault.config import Settings
from sharevault.crypto import DecryptError, Keyring
from sharevault.logs import new_request_id, request_context
from sharevault.metrics import (
    DEAD_LETTERS,
    WORKER_BATCH_SIZE,
    WORKER_COMMIT_SECONDS,
    WORKER_MESSAGES,
    WORKER_RETRIES,
)
from sharevault.store import DATABASE_ERRORS, PERMANENT_ERRORS, TRANSIENT_ERRORS, SealedRow, Store
from sharevault.worker.decode import open_message
from sharevault.worker.inbox import DeliveryCounter, Inbox
from sharevault.worker.retry import (
    HoldGivenUp,
    Reason,
    Retrier,
    deliveries_of,
    hold_and_store,
    settle,
)

log = logging.getLogger(__name__)

# Pauses between attempts to consume again after the broker went away.
RECONNECT_FIRST = 0.5
RECONNECT_MAX = 5.0


@dataclass(frozen=True, slots=True)
class Decoded:
    delivery: AbstractIncomingMessage
    row: SealedRow


class ShareWorker:
    """Batches deliveries into one transaction each; poison goes to the dead-letter queue."""

    def __init__(self, settings: Settings, store: Store, broker: Broker, keyring: Keyring) -> None:
        self._settings = settings
        self._store = store
        self._broker = broker
        self._keyring = keyring
        self._inbox = Inbox()
        self._retrier = Retrier(broker, settings)
        self._deliveries = DeliveryCounter()
        # Counters for logs, tests and (later) metrics.
        self.acked = 0
        self.applied = 0
        self.dead_lettered = 0
        self.redelivered = 0
        self.retried = 0
        self.max_deliveries = 0

    def _received(self, delivery: AbstractIncomingMessage) -> None:
        # A message returned to the live queue may expire into the backlog on its way back:
        # then only our own count of its id shows it is a second delivery.
        seen = self._deliveries.count(delivery.message_id)
        if delivery.redelivered or seen > 1:
            self.redelivered += 1
        deliveries = max(seen, deliveries_of(delivery.headers))
        self.max_deliveries = max(self.max_deliveries, deliveries)

    async def _receive_live(self, delivery: AbstractIncomingMessage) -> None:
        self._received(delivery)
        self._inbox.put(delivery, live=True)

    async def _receive_backlog(self, delivery: AbstractIncomingMessage) -> None:
        self._received(delivery)
        self._inbox.put(delivery, live=False)

    async def run(self, stop: asyncio.Event) -> None:
        """Consume until `stop` is set, then finish what is in hand and return."""
        settings, topology = self._settings, self._broker.topology
        # Live traffic has the larger share; the backlog (old, retried, replayed) the smaller.
        lanes = [
            Lane(topology.shares, settings.worker_prefetch, self._receive_live),
            Lane(topology.backlog, settings.backlog_prefetch, self._receive_backlog),
        ]
        delay = RECONNECT_FIRST
        while not stop.is_set():
            try:
                async with self._broker.consuming(lanes) as session:
                    log.info("worker consuming %s (live) and %s", topology.shares, topology.backlog)
                    delay = RECONNECT_FIRST
                    await self._consume(session, stop)
            except BrokerUnavailable as exc:
                log.warning("broker DOWN for consuming (%s); retrying in %.1fs", exc, delay)
                await _pause(stop, delay)
                delay = min(delay * 2, RECONNECT_MAX)
        log.info(
            "worker stopped: %d acked, %d applied, %d retried later, %d dead-lettered, "
            "%d redelivered, max deliveries of one message %d",
            self.acked,
            self.applied,
            self.retried,
            self.dead_lettered,
            self.redelivered,
            self.max_deliveries,
        )

    async def _consume(self, session: Consuming, stop: asyncio.Event) -> None:
        """Store batches until `stop` (then finish what is in hand) or the connection is lost."""
        halt = asyncio.Event()
        session.lost.add_done_callback(lambda _f: halt.set())
        watch = asyncio.create_task(stop.wait())
        watch.add_done_callback(lambda _t: halt.set())
        size, linger = self._settings.worker_batch_size, self._settings.worker_linger_ms / 1000
        try:
            while not halt.is_set():
                batch = await self._inbox.next_batch(halt, size, linger)
                if batch:
                    await self._process(batch, stop)
        finally:
            watch.cancel()
        if not stop.is_set():
            self._inbox.clear()  # the broker requeued them when the connection went
            raise BrokerUnavailable("consuming connection lost")
        await session.cancel()
        # What the broker already gave us is finished, not dropped; anything arriving still
        # (a cancel the broker did not answer) goes back unacked when the connection closes.
        in_hand = len(self._inbox)
        while in_hand > 0 and (batch := self._inbox.take(min(size, in_hand))):
            in_hand -= len(batch)
            await self._process(batch, stop)

    async def _process(
        self, batch: list[AbstractIncomingMessage], stop: asyncio.Event, *, hold: bool = True
    ) -> None:
        decoded: list[Decoded] = []
        for delivery in batch:
            if is_stale(delivery):
                continue  # its channel died: the broker has requeued it already
            item = await self._decode(delivery)
            if item is not None:
                decoded.append(item)
        if not decoded:
            return
        try:
            await self._commit(decoded, stop, hold=hold)
        except DATABASE_ERRORS as exc:
            if len(decoded) == 1:
                await self._refused(decoded[0].delivery, exc)
                return
            # One bad row spoils the batch: find it by storing one at a time.
            log.warning(
                "batch of %d failed (%s); retrying one by one", len(decoded), type(exc).__name__
            )
            for item in decoded:
                await self._process([item.delivery], stop)

    async def _refused(self, delivery: AbstractIncomingMessage, exc: BaseException) -> None:
        """The database refused this one message: park it if it never can succeed, else retry."""
        if isinstance(exc, PERMANENT_ERRORS):
            await self._dead_letter(delivery, Reason.REJECTED, type(exc).__name__)
        else:
            await self._retry_later(delivery, Reason.DATABASE_ERROR, type(exc).__name__)

    async def _decode(self, delivery: AbstractIncomingMessage) -> Decoded | None:
        try:
            row = open_message(delivery.body, self._keyring)
        except ValidationError:
            await self._dead_letter(delivery, Reason.INVALID)
            return None
        except DecryptError:
            await self._dead_letter(delivery, Reason.UNDECRYPTABLE)
            return None
        return Decoded(delivery, replace(row, request_id=request_id_of(delivery)))

    async def _commit(self, decoded: list[Decoded], stop: asyncio.Event, *, hold: bool) -> None:
        """Upsert the batch and ack; a transient failure holds the batch while it can."""
        rows = [d.row for d in decoded]
        started = time.perf_counter()
        try:
            applied = await self._store.upsert_batch(rows)
        except TRANSIENT_ERRORS as exc:
            if not hold:
                for d in decoded:
                    await self._retry_later(d.delivery, Reason.DATABASE_BUSY, type(exc).__name__)
                return
            try:
                applied = await hold_and_store(self._store, rows, stop, self._settings.retry_hold)
            except HoldGivenUp:
                # The database answers, yet the batch keeps failing: each on its own, and what
                # still fails waits in the retry queues instead of blocking the worker.
                for d in decoded:
                    await self._process([d.delivery], stop, hold=False)
                return
            except TRANSIENT_ERRORS:
                # Stopping while the database is down: hand the messages back to the broker.
                for d in decoded:
                    await settle(d.delivery.nack(requeue=True))
                return
        await self._acknowledge(decoded, applied, started)

    async def _acknowledge(self, decoded: list[Decoded], applied: set[str], started: float) -> None:
        """The batch is committed: ack every delivery, count, and log each with its request id."""
        WORKER_COMMIT_SECONDS.observe(time.perf_counter() - started)
        WORKER_BATCH_SIZE.observe(len(decoded))
        for d in decoded:
            await settle(d.delivery.ack())
        self.acked += len(decoded)
        self.applied += len(applied)
        WORKER_MESSAGES.labels("applied").inc(len(applied))
        WORKER_MESSAGES.labels("stale").inc(len(decoded) - len(applied))
        if log.isEnabledFor(logging.DEBUG) or otel.active():
            for d in decoded:
                with (
                    request_context(request_id_of(d.delivery)),
                    otel.span("sharevault.store", d.delivery.headers, message_id=d.row.message_id),
                ):
                    log.debug("stored message %s", d.row.message_id)

    async def _retry_later(
        self, delivery: AbstractIncomingMessage, reason: Reason, error: str
    ) -> None:
        outcome = await self._retrier.retry_later(delivery, reason, error)
        if outcome is Reason.EXHAUSTED:
            self.dead_lettered += 1
            DEAD_LETTERS.labels(outcome.value).inc()
            WORKER_MESSAGES.labels("dead_lettered").inc()
        elif outcome is not None:
            self.retried += 1
            WORKER_RETRIES.labels(reason.value).inc()

    async def _dead_letter(
        self, delivery: AbstractIncomingMessage, reason: Reason, error: str | None = None
    ) -> None:
        if await self._retrier.dead_letter(delivery, reason, error):
            self.dead_lettered += 1
            DEAD_LETTERS.labels(reason.value).inc()
            WORKER_MESSAGES.labels("dead_lettered").inc()


def request_id_of(delivery: AbstractIncomingMessage) -> str:
    """The id of the HTTP request that produced this message, for the worker's log lines."""
    value = (delivery.headers or {}).get("x-request-id")
    if isinstance(value, bytes):  # AMQP long strings may arrive undecoded
        value = value.decode(errors="replace")
    return new_request_id(value if isinstance(value, str) else None)


async def _pause(stop: asyncio.Event, seconds: float) -> None:
    """Sleep, but wake up at once when the worker is told to stop."""
    with contextlib.suppress(TimeoutError):
        await asyncio.wait_for(stop.wait(), seconds)
