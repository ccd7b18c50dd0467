"""Failure paths of the worker: hold while the database is away, retry levels, dead letters."""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Awaitable, Mapping, Sequence
from dataclasses import dataclass
from datetime import UTC, datetime
from enum import StrEnum
from typing import Any

from aio_pika.abc import AbstractIncomingMessage
from tenacity import AsyncRetrying, RetryCallState, retry_if_exception_type, wait_random_exponential

from sharevault.broker import Broker, BrokerUnavailable
from sharevault.config import Settings
from sharevault.db import TRANSIENT_ERRORS, SealedRow, Store

log = logging.getLogger(__name__)

REASON = "x-sharevault-reason"
ERROR = "x-sharevault-error"
ATTEMPTS = "x-sharevault-attempts"
FIRST_FAILURE = "x-sharevault-first-failure"
LAST_FAILURE = "x-sharevault-last-failure"
REPLAYS = "x-sharevault-replays"
# Set by the broker when it dead-letters or redelivers. Dropped whenever we publish a message
# anew: counts start afresh and RabbitMQ's dead-letter cycle detection never sees a false loop.
BROKER_HEADERS = (
    "x-death",
    "x-delivery-count",
    "x-first-death-exchange",
    "x-first-death-queue",
    "x-first-death-reason",
    "x-last-death-exchange",
    "x-last-death-queue",
    "x-last-death-reason",
)


class Reason(StrEnum):
    """Why a message left the work path; the DLQ counts and filters by it."""

    INVALID = "invalid_message"
    UNDECRYPTABLE = "undecryptable"
    REJECTED = "rejected_by_database"
    DATABASE_ERROR = "database_error"
    DATABASE_BUSY = "database_busy"
    EXHAUSTED = "attempts_exhausted"
    DELIVERY_LIMIT = "delivery_limit"


def iso_now() -> str:
    return datetime.now(UTC).isoformat(timespec="milliseconds")


def clean_headers(headers: Mapping[str, Any] | None) -> dict[str, Any]:
    """The message's own headers, without what the broker added on its way."""
    return {k: v for k, v in (headers or {}).items() if k not in BROKER_HEADERS}


def attempts_of(headers: Mapping[str, Any] | None) -> int:
    value = (headers or {}).get(ATTEMPTS, 0)
    return value if isinstance(value, int) else 0


def deliveries_of(headers: Mapping[str, Any] | None) -> int:
    """How many times the current queue has delivered it (quorum queues count returns)."""
    value = (headers or {}).get("x-delivery-count", 0)
    return (value if isinstance(value, int) else 0) + 1


def failure_headers(
    headers: Mapping[str, Any] | None, reason: str, error: str | None, now: str
) -> dict[str, Any]:
    """Headers after one more failed attempt: count, reason, first and last failure time."""
    updated = clean_headers(headers)
    updated[ATTEMPTS] = attempts_of(headers) + 1
    updated.setdefault(FIRST_FAILURE, now)
    updated[LAST_FAILURE] = now
    updated[REASON] = reason
    if error is None:
        updated.pop(ERROR, None)
    else:
        updated[ERROR] = error
    return updated


@dataclass(frozen=True, slots=True)
class Parcel:
    """What moves to a retry level or the DLQ: one message's body, id and headers. A whole
    delivery, or one share of a batch (a batch is never moved whole by the worker)."""

    body: bytes
    message_id: str
    headers: Mapping[str, Any]
    content_type: str | None

    @classmethod
    def of(cls, delivery: AbstractIncomingMessage) -> Parcel:
        return cls(
            delivery.body, delivery.message_id or "", delivery.headers or {}, delivery.content_type
        )


class Retrier:
    """Moves failed parcels down the retry levels, or to the DLQ. It never settles deliveries:
    the caller acks once every part of a delivery is stored or moved (moved = confirmed)."""

    def __init__(self, broker: Broker, settings: Settings) -> None:
        self._broker = broker
        self._delays = settings.retry_delays
        self._max_attempts = settings.retry_max_attempts
        self._timeout = settings.publish_timeout

    async def retry_later(self, parcel: Parcel, reason: Reason, error: str | None) -> Reason | None:
        """Off to the retry level its attempt count says, or to the DLQ when they are spent;
        None when the broker did not take it (the caller gives the delivery back)."""
        headers = failure_headers(parcel.headers, reason, error, iso_now())
        attempts = int(headers[ATTEMPTS])
        if attempts >= self._max_attempts:
            headers[REASON] = Reason.EXHAUSTED
            headers[ERROR] = f"{reason}:{error}" if error else str(reason)
            return Reason.EXHAUSTED if await self._move(parcel, "dead", headers) else None
        level = min(attempts, len(self._delays)) - 1
        delay = self._delays[level]
        moved = await self._move(parcel, f"retry.{level}", headers, expiration=delay)
        if moved:
            log.warning(
                "message %s: %s (%s), attempt %d; retrying in %gs",
                parcel.message_id,
                reason,
                error,
                attempts,
                delay,
            )
        return reason if moved else None

    async def dead_letter(self, parcel: Parcel, reason: Reason, error: str | None = None) -> bool:
        """Park a message that can never succeed, with the reason in its headers."""
        headers = failure_headers(parcel.headers, reason, error, iso_now())
        return await self._move(parcel, "dead", headers)

    async def _move(
        self,
        parcel: Parcel,
        key: str,
        headers: dict[str, Any],
        *,
        expiration: float | None = None,
    ) -> bool:
        try:
            await self._broker.publish_raw(
                parcel.body,
                message_id=parcel.message_id,
                routing_key=key,
                exchange=self._broker.topology.recover,
                headers=headers,
                expiration=expiration,
                timeout=self._timeout,
                content_type=parcel.content_type,
            )
        except BrokerUnavailable:
            # Not moved: the caller hands its delivery back to the broker, after a pause.
            await asyncio.sleep(1.0)
            return False
        if key == "dead":
            log.error("message %s dead-lettered: %s", parcel.message_id, headers[REASON])
        return True


class HoldGivenUp(Exception):
    """The database answers, yet the batch kept failing for longer than RETRY_HOLD."""


async def hold_and_store(
    store: Store, rows: Sequence[SealedRow], stop: asyncio.Event, hold: float
) -> set[str]:
    """Hold the batch in hand and retry with jittered, growing pauses (no redelivery churn)."""
    state = _Holding(len(rows))
    async for attempt in AsyncRetrying(
        retry=retry_if_exception_type(TRANSIENT_ERRORS),
        wait=wait_random_exponential(multiplier=0.2, max=5.0),
        stop=lambda _state: stop.is_set(),
        before_sleep=state.log,
        reraise=True,
    ):
        with attempt:
            try:
                applied = await store.upsert_batch(rows)
            except TRANSIENT_ERRORS:
                # Holding is right while the database is away; when it answers and the batch
                # still fails (locks, conflicts), the retry queues let other traffic through.
                state.answers = await _database_answers(store)
                if state.answers and state.elapsed >= hold and not stop.is_set():
                    raise HoldGivenUp from None
                raise
    log.info("database back after %.1fs; stored %d held messages", state.elapsed, len(rows))
    return applied


async def _database_answers(store: Store) -> bool:
    try:
        async with asyncio.timeout(2.0):
            await store.ping()
    except TRANSIENT_ERRORS:
        return False
    return True


class _Holding:
    """What the worker says while it holds a batch: is the database down, or just refusing?"""

    def __init__(self, count: int) -> None:
        self.count = count
        self.started = time.monotonic()
        self.answers = False

    @property
    def elapsed(self) -> float:
        return time.monotonic() - self.started

    def log(self, state: RetryCallState) -> None:
        exc = state.outcome.exception() if state.outcome else None
        what = "answers but the batch keeps failing" if self.answers else "DOWN"
        log.warning(
            "database %s (%s) for %.1fs; holding %d messages, next try in %.1fs",
            what,
            type(exc).__name__,
            self.elapsed,
            self.count,
            state.upcoming_sleep,
        )


async def settle(action: Awaitable[None]) -> None:
    """Ack/nack on a channel that died is harmless: the broker redelivers, the upsert absorbs it."""
    try:
        await action
    except Exception as exc:
        log.warning("could not settle delivery (%s); broker will redeliver", type(exc).__name__)
