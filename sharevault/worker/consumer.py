"""The worker: consume sealed shares, upsert them in batches, ack only after commit."""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time

from tenacity import AsyncRetrying, RetryCallState, retry_if_exception_type, wait_random_exponential

from sharevault import hops
from sharevault.broker import Broker, BrokerUnavailable, Consuming, Delivery, Lane, is_stale
from sharevault.clock import ClockDiscipline
from sharevault.config import Settings
from sharevault.crypto import Keyring
from sharevault.db import Store
from sharevault.messages import Envelope, deliveries_of, shares_in
from sharevault.metrics import DEAD_LETTERS, WORKER_MESSAGES, WORKER_RETRIES
from sharevault.worker.decode import Decoded, Flaw, Share, Unstorable, open_body
from sharevault.worker.inbox import DeliveryCounter, Inbox
from sharevault.worker.retry import Reason, Retrier, settle
from sharevault.worker.writing import Fate, Outcome, Writer

log = logging.getLogger(__name__)

FLAW_REASONS = {
    Flaw.INVALID: Reason.INVALID,
    Flaw.UNDECRYPTABLE: Reason.UNDECRYPTABLE,
    Flaw.TAMPERED: Reason.TAMPERED,
}

# Pauses between attempts to consume again after the broker went away: jittered, up to this.
RECONNECT_MAX = 5.0


class ShareWorker:
    """Batches deliveries into one transaction each; poison goes to the dead-letter queue."""

    def __init__(self, settings: Settings, store: Store, broker: Broker, keyring: Keyring) -> None:
        self._settings = settings
        self._broker = broker
        self._keyring = keyring
        self._inbox = Inbox(lambda delivery: shares_in(delivery.headers))
        self._writer = Writer(store, settings.retry_hold)
        self._retrier = Retrier(
            broker.publisher,
            broker.topology.recover,
            delays=settings.retry_delays,
            max_attempts=settings.retry_max_attempts,
            timeout=settings.publish_timeout,
        )
        self._deliveries = DeliveryCounter()
        # PostgreSQL's time as this worker's clock tells it (open_worker keeps it compared): a
        # version further ahead than MAX_CLOCK_SKEW is a forgery.
        self.clock = ClockDiscipline(
            settings.max_clock_skew, settings.clock_check_interval, gateway=False
        )
        # Counters for logs, tests and (later) metrics.
        self.acked = 0
        self.applied = 0
        self.dead_lettered = 0
        self.redelivered = 0
        self.retried = 0
        self.max_deliveries = 0

    def _received(self, delivery: Delivery) -> None:
        # A message returned to the live queue may expire into the backlog on its way back:
        # then only our own count of its id shows it is a second delivery.
        if hops.ON:
            hops.delivered(delivery)
        seen = self._deliveries.count(delivery.message_id)
        if delivery.redelivered or seen > 1:
            self.redelivered += 1
        deliveries = max(seen, deliveries_of(delivery.headers))
        self.max_deliveries = max(self.max_deliveries, deliveries)

    async def _receive_live(self, delivery: Delivery) -> None:
        self._received(delivery)
        self._inbox.put(delivery, live=True)

    async def _receive_backlog(self, delivery: Delivery) -> None:
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
        while not stop.is_set():
            # Connect (to the first node that answers) with growing pauses while none does;
            # after a loss, at once again: another node may be there.
            async for attempt in AsyncRetrying(
                retry=retry_if_exception_type(BrokerUnavailable),
                wait=wait_random_exponential(multiplier=0.5, max=RECONNECT_MAX),
                stop=lambda _state: stop.is_set(),
                sleep=lambda seconds: _pause(stop, seconds),
                before_sleep=_consuming_down,
                retry_error_callback=lambda _state: None,
            ):
                with attempt:
                    async with self._broker.consuming(lanes) as session:
                        log.info(
                            "worker consuming %s (live) and %s", topology.shares, topology.backlog
                        )
                        await self._consume(session, stop)
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
            log.warning("broker connection for consuming lost; consuming again")
            return
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

    async def _write(
        self, in_hand: list[tuple[Delivery, Decoded, Share]], stop: asyncio.Event
    ) -> list[Outcome]:
        began = time.perf_counter()
        outcomes = await self._writer.write([share for _d, _o, share in in_hand], stop)
        if hops.ON:  # the bench's latency budget (sharevault/hops.py)
            hops.stored(((s.row.message_id, d) for d, _o, s in in_hand), began)
        return outcomes

    async def _process(self, batch: list[Delivery], stop: asyncio.Event) -> None:
        """Store the shares of these deliveries, move those that failed, then settle each
        delivery: acked once every share of it is stored or moved, else given back."""
        deliveries: list[tuple[Delivery, Decoded]] = []
        give_back: set[int] = set()
        for delivery in batch:
            if is_stale(delivery):
                continue  # its channel died: the broker has requeued it already
            decoded = self._decode(delivery)
            deliveries.append((delivery, decoded))
            for unstorable in decoded.unstorable:
                reason = FLAW_REASONS[unstorable.flaw]
                if not await self._dead_letter(_envelope(delivery, decoded, unstorable), reason):
                    give_back.add(id(delivery))
        in_hand = [(d, decoded, share) for d, decoded in deliveries for share in decoded.shares]
        if in_hand:
            outcomes = await self._write(in_hand, stop)
            for (delivery, decoded, share), outcome in zip(in_hand, outcomes, strict=True):
                if not await self._follow(_envelope(delivery, decoded, share), outcome):
                    give_back.add(id(delivery))
        for delivery, _decoded in deliveries:
            if id(delivery) in give_back:
                await settle(delivery.nack(requeue=True))
            else:
                await settle(delivery.ack())

    def _decode(self, delivery: Delivery) -> Decoded:
        return open_body(
            delivery.body,
            self._keyring,
            content_type=delivery.content_type,
            message_id=delivery.message_id or "",
            headers=delivery.headers,
            latest=self.clock.latest_version(),
        )

    async def _follow(self, envelope: Envelope, outcome: Outcome) -> bool:
        """Count a share's outcome and make its move; False when its delivery goes back."""
        if outcome.fate is Fate.STORED:
            self.acked += 1
            self.applied += outcome.applied
            return True
        if outcome.fate is Fate.GIVE_BACK or outcome.reason is None:
            return False  # (a retry or a dead letter always has its reason)
        if outcome.fate is Fate.DEAD:
            return await self._dead_letter(envelope, outcome.reason, outcome.error)
        moved = await self._retrier.retry_later(envelope, outcome.reason, outcome.error)
        if moved is None:
            return False
        if moved is Reason.EXHAUSTED:
            self.dead_lettered += 1
            DEAD_LETTERS.labels(moved.value).inc()
            WORKER_MESSAGES.labels("dead_lettered").inc()
        else:
            self.retried += 1
            WORKER_RETRIES.labels(outcome.reason.value).inc()
        return True

    async def _dead_letter(
        self, envelope: Envelope, reason: Reason, error: str | None = None
    ) -> bool:
        if not await self._retrier.dead_letter(envelope, reason, error):
            return False
        self.dead_lettered += 1
        DEAD_LETTERS.labels(reason.value).inc()
        WORKER_MESSAGES.labels("dead_lettered").inc()
        return True


def _envelope(delivery: Delivery, decoded: Decoded, share: Share | Unstorable) -> Envelope:
    """What moves for this share if it cannot be stored now."""
    delivered = Envelope(
        delivery.body, delivery.message_id or "", delivery.headers or {}, delivery.content_type
    )
    return decoded.envelope_of(delivered, share)


def _consuming_down(state: RetryCallState) -> None:
    exc = state.outcome.exception() if state.outcome else None
    log.warning("broker DOWN for consuming (%s); retrying in %.1fs", exc, state.upcoming_sleep)


async def _pause(stop: asyncio.Event, seconds: float) -> None:
    """Sleep, but wake up at once when the worker is told to stop."""
    with contextlib.suppress(TimeoutError):
        async with asyncio.timeout(seconds):
            await stop.wait()
