"""The worker: consume sealed shares, upsert them in batches, ack only after commit."""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
from collections.abc import Awaitable, Callable
from dataclasses import dataclass

import asyncpg
from aio_pika.abc import AbstractIncomingMessage
from pydantic import ValidationError
from tenacity import (
    AsyncRetrying,
    RetryCallState,
    retry_if_exception_type,
    wait_random_exponential,
)

from sharevault.broker import Broker, BrokerUnavailable
from sharevault.config import Settings
from sharevault.crypto import DecryptError, Keyring
from sharevault.schemas import ShareMessage
from sharevault.store import TRANSIENT_ERRORS, SealedRow, Store

log = logging.getLogger(__name__)


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
        self._inbox: asyncio.Queue[AbstractIncomingMessage] = asyncio.Queue()
        # Counters for logs, tests and (later) metrics.
        self.acked = 0
        self.applied = 0
        self.dead_lettered = 0
        self.redelivered = 0

    async def _receive(self, delivery: AbstractIncomingMessage) -> None:
        if delivery.redelivered:
            self.redelivered += 1
        await self._inbox.put(delivery)

    async def run(self, stop: asyncio.Event) -> None:
        """Consume until `stop` is set, then finish what is in hand and return."""
        consumer = await self._broker.consume(
            self._receive, prefetch=self._settings.worker_prefetch
        )
        log.info("worker consuming %s", self._broker.topology.shares)
        try:
            while not stop.is_set():
                batch = await self._next_batch(stop)
                if batch:
                    await self._process(batch, stop)
            await consumer.cancel()
            # What the broker already gave us is finished, not dropped.
            while not self._inbox.empty():
                await self._process(self._take_ready(self._settings.worker_batch_size), stop)
        finally:
            await consumer.close()
        log.info(
            "worker stopped: %d acked, %d applied, %d dead-lettered",
            self.acked,
            self.applied,
            self.dead_lettered,
        )

    def _take_ready(self, limit: int) -> list[AbstractIncomingMessage]:
        batch: list[AbstractIncomingMessage] = []
        while len(batch) < limit and not self._inbox.empty():
            batch.append(self._inbox.get_nowait())
        return batch

    async def _next_batch(self, stop: asyncio.Event) -> list[AbstractIncomingMessage]:
        """The first delivery, then whatever arrives within the linger, up to the batch size."""
        get = asyncio.ensure_future(self._inbox.get())
        stopped = asyncio.ensure_future(stop.wait())
        await asyncio.wait({get, stopped}, return_when=asyncio.FIRST_COMPLETED)
        stopped.cancel()
        if not get.done():
            get.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await get
            return []
        batch = [get.result()]
        size = self._settings.worker_batch_size
        deadline = time.monotonic() + self._settings.worker_linger_ms / 1000
        while len(batch) < size:
            batch.extend(self._take_ready(size - len(batch)))
            remaining = deadline - time.monotonic()
            if len(batch) >= size or remaining <= 0:
                break
            try:
                batch.append(await asyncio.wait_for(self._inbox.get(), remaining))
            except TimeoutError:
                break
        return batch

    async def _process(self, batch: list[AbstractIncomingMessage], stop: asyncio.Event) -> None:
        decoded: list[Decoded] = []
        for delivery in batch:
            item = await self._decode(delivery)
            if item is not None:
                decoded.append(item)
        if not decoded:
            return
        try:
            await self._commit(decoded, stop)
        except asyncpg.PostgresError as exc:
            if len(decoded) == 1:
                await self._dead_letter(
                    decoded[0].delivery, f"rejected_by_database:{type(exc).__name__}"
                )
                return
            # One bad row spoils the batch: find it by storing one at a time.
            log.warning(
                "batch of %d failed (%s); retrying one by one", len(decoded), type(exc).__name__
            )
            for item in decoded:
                await self._process([item.delivery], stop)

    async def _decode(self, delivery: AbstractIncomingMessage) -> Decoded | None:
        try:
            message = ShareMessage.model_validate_json(delivery.body)
            sealed = message.sealed_bytes
            # Refuse to store what we could never serve back.
            self._keyring.open(sealed, message.identity)
        except ValidationError:
            await self._dead_letter(delivery, "invalid_message")
            return None
        except DecryptError:
            await self._dead_letter(delivery, "undecryptable")
            return None
        row = SealedRow(message.identity, sealed, message.version, message.message_id)
        return Decoded(delivery, row)

    async def _commit(self, decoded: list[Decoded], stop: asyncio.Event) -> None:
        """Upsert the batch, retrying transient failures with growing delays while we hold it."""
        rows = [d.row for d in decoded]
        try:
            applied = await self._store.upsert_batch(rows)
        except TRANSIENT_ERRORS:
            try:
                applied = await self._retry_upsert(rows, stop)
            except TRANSIENT_ERRORS:
                # Stopping while the database is down: hand the messages back to the broker.
                for d in decoded:
                    await _settle(d.delivery.nack(requeue=True))
                return
        for d in decoded:
            await _settle(d.delivery.ack())
        self.acked += len(decoded)
        self.applied += len(applied)

    async def _retry_upsert(self, rows: list[SealedRow], stop: asyncio.Event) -> set[str]:
        """Hold the batch (no redelivery churn) and retry with growing, jittered delays."""
        async for attempt in AsyncRetrying(
            retry=retry_if_exception_type(TRANSIENT_ERRORS),
            wait=wait_random_exponential(multiplier=0.2, max=5.0),
            before_sleep=_log_holding(len(rows)),
            stop=lambda _rs: stop.is_set(),
            reraise=True,
        ):
            with attempt:
                applied = await self._store.upsert_batch(rows)
        log.info("database back; stored %d held messages", len(rows))
        return applied

    async def _dead_letter(self, delivery: AbstractIncomingMessage, reason: str) -> None:
        """Park a message that can never succeed, with the reason in its headers."""
        headers = dict(delivery.headers or {})
        headers.update({"x-sharevault-reason": reason, "x-sharevault-failed-at": time.time()})
        try:
            await self._broker.publish_raw(
                delivery.body,
                message_id=delivery.message_id or "",
                routing_key=self._broker.topology.dead,
                exchange="",
                headers=headers,
                timeout=self._settings.publish_timeout,
            )
        except BrokerUnavailable:
            await _settle(delivery.nack(requeue=True))
            await asyncio.sleep(1.0)
            return
        log.error("message %s dead-lettered: %s", delivery.message_id, reason)
        await _settle(delivery.ack())
        self.dead_lettered += 1


def _log_holding(count: int) -> Callable[[RetryCallState], None]:
    def before_sleep(state: RetryCallState) -> None:
        exc = state.outcome.exception() if state.outcome else None
        log.warning(
            "database unavailable (%s); holding %d messages, attempt %d",
            type(exc).__name__,
            count,
            state.attempt_number,
        )

    return before_sleep


async def _settle(action: Awaitable[None]) -> None:
    """Ack/nack on a channel that died is harmless: the broker redelivers, the upsert absorbs it."""
    try:
        await action
    except Exception as exc:
        log.warning("could not settle delivery (%s); broker will redeliver", type(exc).__name__)
