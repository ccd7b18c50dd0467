"""Moves of the worker: a share that failed goes to a retry level or, spent, to the DLQ."""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Awaitable, Sequence
from datetime import UTC, datetime
from enum import StrEnum

from sharevault.broker import BrokerUnavailable, Publisher
from sharevault.messages import (
    ATTEMPTS,
    DEAD_KEY,
    ERROR,
    REASON,
    Envelope,
    failure_headers,
    retry_key,
)

log = logging.getLogger(__name__)


class Reason(StrEnum):
    """Why a message left the work path; the DLQ counts and filters by it."""

    INVALID = "invalid_message"
    UNDECRYPTABLE = "undecryptable"
    TAMPERED = "tampered"
    REJECTED = "rejected_by_database"
    DATABASE_ERROR = "database_error"
    DATABASE_BUSY = "database_busy"
    EXHAUSTED = "attempts_exhausted"
    DELIVERY_LIMIT = "delivery_limit"


def iso_now() -> str:
    return datetime.now(UTC).isoformat(timespec="milliseconds")


class Retrier:
    """Moves failed messages down the retry levels, or to the DLQ. It never settles deliveries:
    the caller acks once every share of a delivery is stored or moved (moved = confirmed)."""

    def __init__(
        self,
        publisher: Publisher,
        exchange: str,
        *,
        delays: Sequence[float],
        max_attempts: int,
        timeout: float,
    ) -> None:
        self._publisher = publisher
        self._exchange = exchange  # the recover exchange (topology.py)
        self._delays = delays
        self._max_attempts = max_attempts
        self._timeout = timeout

    async def retry_later(
        self, envelope: Envelope, reason: Reason, error: str | None
    ) -> Reason | None:
        """Off to the retry level its attempt count says, or to the DLQ when they are spent;
        None when the broker did not take it (the caller gives the delivery back)."""
        headers = failure_headers(envelope.headers, reason, error, iso_now())
        attempts = int(headers[ATTEMPTS])
        if attempts >= self._max_attempts:
            headers[REASON] = Reason.EXHAUSTED
            headers[ERROR] = f"{reason}:{error}" if error else str(reason)
            return Reason.EXHAUSTED if await self._move(envelope, DEAD_KEY, headers) else None
        level = min(attempts, len(self._delays)) - 1
        delay = self._delays[level]
        moved = await self._move(envelope, retry_key(level), headers, expiration=delay)
        if moved:
            log.warning(
                "message %s: %s (%s), attempt %d; retrying in %gs",
                envelope.message_id,
                reason,
                error,
                attempts,
                delay,
            )
        return reason if moved else None

    async def dead_letter(self, envelope: Envelope, reason: Reason, error: str | None) -> bool:
        """Park a message that can never succeed, with the reason in its headers."""
        headers = failure_headers(envelope.headers, reason, error, iso_now())
        return await self._move(envelope, DEAD_KEY, headers)

    async def _move(
        self,
        envelope: Envelope,
        key: str,
        headers: dict[str, object],
        *,
        expiration: float | None = None,
    ) -> bool:
        moved = Envelope(envelope.body, envelope.message_id, headers, envelope.content_type)
        try:
            await self._publisher.publish(
                moved,
                routing_key=key,
                exchange=self._exchange,
                expiration=expiration,
                timeout=self._timeout,
            )
        except BrokerUnavailable:
            # Not moved: the caller hands its delivery back to the broker, after a pause.
            await asyncio.sleep(1.0)
            return False
        if key == DEAD_KEY:
            log.error("message %s dead-lettered: %s", envelope.message_id, headers[REASON])
        return True


async def settle(action: Awaitable[None]) -> None:
    """Ack/nack on a channel that died is harmless: the broker redelivers, the upsert absorbs it."""
    try:
        await action
    except Exception as exc:
        log.warning("could not settle delivery (%s); broker will redeliver", type(exc).__name__)
