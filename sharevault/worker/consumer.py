"""The worker: consume sealed shares, upsert them in batches, ack only after commit."""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
from dataclasses import dataclass

from aio_pika.abc import AbstractIncomingMessage

from sharevault import hops, otel
from sharevault.broker import Broker, BrokerUnavailable, Consuming, Lane, is_stale
from sharevault.config import Settings
from sharevault.crypto import Keyring
from sharevault.db import DATABASE_ERRORS, PERMANENT_ERRORS, TRANSIENT_ERRORS, Store
from sharevault.logs import new_request_id, request_context
from sharevault.messages import SHARES_HEADER, SINGLE_CONTENT_TYPE
from sharevault.metrics import (
    DEAD_LETTERS,
    WORKER_BATCH_SIZE,
    WORKER_COMMIT_SECONDS,
    WORKER_MESSAGES,
    WORKER_RETRIES,
)
from sharevault.worker.decode import Flaw, Flawed, Opened, open_body, shares_in
from sharevault.worker.inbox import DeliveryCounter, Inbox
from sharevault.worker.retry import (
    HoldGivenUp,
    Parcel,
    Reason,
    Retrier,
    clean_headers,
    deliveries_of,
    hold_and_store,
    settle,
)

log = logging.getLogger(__name__)

# Pauses between attempts to consume again after the broker went away.
RECONNECT_FIRST = 0.5
RECONNECT_MAX = 5.0


@dataclass(eq=False, slots=True)
class Unit:
    """One delivery in hand: acked once each of its shares is stored or moved, else given back."""

    delivery: AbstractIncomingMessage
    batch: bool
    give_back: bool = False


@dataclass(frozen=True, slots=True)
class Part:
    """One share of a delivery, on its way to the table."""

    unit: Unit
    share: Opened

    def parcel(self) -> Parcel:
        """What moves to a retry level or the DLQ if this share cannot be stored now."""
        if not self.unit.batch:
            return Parcel.of(self.unit.delivery)
        share = self.share
        return _share_parcel(self.unit.delivery, share.message.encode(), share, SINGLE_CONTENT_TYPE)


def _share_parcel(
    delivery: AbstractIncomingMessage, body: bytes, share: Opened | Flawed, content_type: str | None
) -> Parcel:
    """One share of a batch as a message of its own, with the batch's headers and its own ids."""
    headers = {k: v for k, v in clean_headers(delivery.headers).items() if k != SHARES_HEADER}
    headers.update(share.context)
    message_id = share.message_id if isinstance(share, Flawed) else share.row.message_id
    return Parcel(body, message_id, headers, content_type)


class ShareWorker:
    """Batches deliveries into one transaction each; poison goes to the dead-letter queue."""

    def __init__(self, settings: Settings, store: Store, broker: Broker, keyring: Keyring) -> None:
        self._settings = settings
        self._store = store
        self._broker = broker
        self._keyring = keyring
        self._inbox = Inbox(lambda delivery: shares_in(delivery.headers))
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
        if hops.ON:
            hops.delivered(delivery)
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
        while in_hand > 0:
            batch, _shares = self._inbox.take(size)
            if not batch:
                break
            in_hand -= len(batch)
            await self._process(batch, stop)

    async def _process(self, batch: list[AbstractIncomingMessage], stop: asyncio.Event) -> None:
        """Store the shares of these deliveries, then settle each delivery."""
        units: list[Unit] = []
        parts: list[Part] = []
        for delivery in batch:
            if is_stale(delivery):
                continue  # its channel died: the broker has requeued it already
            unit = Unit(delivery, batch=False)
            units.append(unit)
            parts.extend(Part(unit, share) for share in await self._open(unit))
        if parts:
            await self._write(parts, stop, hold=True)
        for unit in units:
            if unit.give_back:
                await settle(unit.delivery.nack(requeue=True))
            else:
                await settle(unit.delivery.ack())

    async def _open(self, unit: Unit) -> list[Opened]:
        """The shares of a delivery to store; those that never can be go to the DLQ."""
        delivery = unit.delivery
        contents = open_body(
            delivery.body,
            self._keyring,
            content_type=delivery.content_type,
            message_id=delivery.message_id or "",
            headers=delivery.headers,
        )
        unit.batch = contents.batch
        for flawed in contents.flawed:
            reason = Reason.INVALID if flawed.flaw is Flaw.INVALID else Reason.UNDECRYPTABLE
            parcel = (
                Parcel.of(delivery)
                if flawed.whole
                else _share_parcel(delivery, flawed.body, flawed, flawed.content_type)
            )
            await self._dead_letter(unit, parcel, reason)
        return contents.opened

    async def _write(self, parts: list[Part], stop: asyncio.Event, *, hold: bool) -> None:
        """Store these shares: each ends stored, moved to a retry level or the DLQ, or with its
        delivery marked to be handed back to the broker."""
        try:
            await self._commit(parts, stop, hold=hold)
        except DATABASE_ERRORS as exc:
            if len(parts) == 1:
                await self._refused(parts[0], exc)
                return
            # One bad row spoils the batch: find it by storing one at a time.
            log.warning(
                "batch of %d failed (%s); retrying one by one", len(parts), type(exc).__name__
            )
            for part in parts:
                await self._write([part], stop, hold=hold)

    async def _refused(self, part: Part, exc: BaseException) -> None:
        """The database refused this one share: park it if it never can succeed, else retry."""
        if isinstance(exc, PERMANENT_ERRORS):
            await self._dead_letter(part.unit, part.parcel(), Reason.REJECTED, type(exc).__name__)
        else:
            await self._retry_later(part, Reason.DATABASE_ERROR, type(exc).__name__)

    async def _commit(self, parts: list[Part], stop: asyncio.Event, *, hold: bool) -> None:
        """Upsert the shares in one transaction; a transient failure holds them while it can."""
        rows = [p.share.row for p in parts]
        started = time.perf_counter()
        try:
            applied = await self._store.upsert_batch(rows)
        except TRANSIENT_ERRORS as exc:
            if not hold:
                for part in parts:
                    await self._retry_later(part, Reason.DATABASE_BUSY, type(exc).__name__)
                return
            try:
                applied = await hold_and_store(self._store, rows, stop, self._settings.retry_hold)
            except HoldGivenUp:
                # The database answers, yet the batch keeps failing: each on its own, and what
                # still fails waits in the retry queues instead of blocking the worker.
                for part in parts:
                    await self._write([part], stop, hold=False)
                return
            except TRANSIENT_ERRORS:
                # Stopping while the database is down: hand the messages back to the broker.
                for part in parts:
                    part.unit.give_back = True
                return
        self._stored(parts, applied, started)

    def _stored(self, parts: list[Part], applied: set[str], started: float) -> None:
        """The shares are committed (their deliveries are acked after): count and log them."""
        WORKER_COMMIT_SECONDS.observe(time.perf_counter() - started)
        if hops.ON:
            hops.stored(((p.share.row.message_id, p.unit.delivery) for p in parts), started)
        WORKER_BATCH_SIZE.observe(len(parts))
        self.acked += len(parts)
        self.applied += len(applied)
        WORKER_MESSAGES.labels("applied").inc(len(applied))
        WORKER_MESSAGES.labels("stale").inc(len(parts) - len(applied))
        if log.isEnabledFor(logging.DEBUG) or otel.active():
            for part in parts:
                row = part.share.row
                with (
                    request_context(row.request_id or new_request_id()),
                    otel.span("sharevault.db", part.share.context, message_id=row.message_id),
                ):
                    log.debug("stored message %s", row.message_id)

    async def _retry_later(self, part: Part, reason: Reason, error: str) -> None:
        outcome = await self._retrier.retry_later(part.parcel(), reason, error)
        if outcome is None:
            part.unit.give_back = True
        elif outcome is Reason.EXHAUSTED:
            self.dead_lettered += 1
            DEAD_LETTERS.labels(outcome.value).inc()
            WORKER_MESSAGES.labels("dead_lettered").inc()
        else:
            self.retried += 1
            WORKER_RETRIES.labels(reason.value).inc()

    async def _dead_letter(
        self, unit: Unit, parcel: Parcel, reason: Reason, error: str | None = None
    ) -> None:
        if await self._retrier.dead_letter(parcel, reason, error):
            self.dead_lettered += 1
            DEAD_LETTERS.labels(reason.value).inc()
            WORKER_MESSAGES.labels("dead_lettered").inc()
        else:
            unit.give_back = True


async def _pause(stop: asyncio.Event, seconds: float) -> None:
    """Sleep, but wake up at once when the worker is told to stop."""
    with contextlib.suppress(TimeoutError):
        async with asyncio.timeout(seconds):
            await stop.wait()
