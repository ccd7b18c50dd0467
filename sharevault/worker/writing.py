"""The worker's write path as data: store a batch of shares and say what became of each one.

Try the batch in one transaction; while the database is down, hold it in hand and try again; when
the database answers yet refuses the batch, try its shares one at a time. Every share ends with an
`Outcome`: stored, to retry later, dead (never storable), or to give back to the broker."""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Sequence
from dataclasses import dataclass
from enum import StrEnum

from tenacity import AsyncRetrying, RetryCallState, retry_if_exception_type, wait_random_exponential

from sharevault import otel
from sharevault.db import (
    DATABASE_ERRORS,
    PERMANENT_ERRORS,
    TRANSIENT_ERRORS,
    SealedRow,
    Store,
    refusal_of,
)
from sharevault.logs import new_request_id, request_context
from sharevault.metrics import WORKER_BATCH_SIZE, WORKER_COMMIT_SECONDS, WORKER_MESSAGES
from sharevault.worker.decode import Share
from sharevault.worker.retry import Reason

log = logging.getLogger(__name__)


class Fate(StrEnum):
    STORED = "stored"  # committed (`applied` when newer than what the table had)
    RETRY = "retry"  # off to a retry level (or the DLQ once its attempts are spent)
    DEAD = "dead"  # never storable: to the DLQ
    GIVE_BACK = "give_back"  # stopping while the database is down: the broker keeps it


@dataclass(frozen=True, slots=True)
class Outcome:
    """What became of one share."""

    fate: Fate
    reason: Reason | None = None
    error: str | None = None
    applied: bool = False


@dataclass(frozen=True, slots=True)
class _Split:
    """The batch failed as a whole: try its shares one at a time, holding or not."""

    hold: bool


class HoldGivenUp(Exception):
    """The database answers, yet the batch kept failing for longer than RETRY_HOLD."""


class Writer:
    """Stores shares in batches and returns one Outcome per share, in their order."""

    def __init__(self, store: Store, hold: float) -> None:
        self._store = store
        self._hold = hold  # seconds to keep trying a batch the database refuses while it answers

    async def write(self, shares: Sequence[Share], stop: asyncio.Event) -> list[Outcome]:
        """Store the shares; a batch that fails as a whole is split, one share at a time."""
        outcomes: list[Outcome] = []
        todo: list[tuple[Sequence[Share], bool]] = [(shares, True)]
        while todo:
            group, hold = todo.pop(0)
            result = await self._attempt(group, stop, hold=hold)
            if isinstance(result, _Split):
                # A single share splits only once (from holding to not), so this ends.
                todo[:0] = [([share], result.hold) for share in group]
            else:
                outcomes.extend(result)
        return outcomes

    async def _attempt(
        self, shares: Sequence[Share], stop: asyncio.Event, *, hold: bool
    ) -> list[Outcome] | _Split:
        rows = [share.row for share in shares]
        started = time.perf_counter()
        try:
            if hold:
                applied = await self._held(rows, stop)
            else:
                applied = await self._store.upsert_batch(rows)
        except HoldGivenUp:
            # The database answers, yet the batch keeps failing: each on its own, and what
            # still fails waits in the retry queues instead of blocking the worker.
            return _Split(hold=False)
        except TRANSIENT_ERRORS as exc:
            if hold:
                # Stopping while the database is down: hand the messages back to the broker.
                return [Outcome(Fate.GIVE_BACK)] * len(shares)
            busy = Outcome(Fate.RETRY, Reason.DATABASE_BUSY, type(exc).__name__)
            return [busy] * len(shares)
        except DATABASE_ERRORS as exc:
            if len(shares) > 1:
                # One bad row spoils the batch: find it by storing one at a time.
                log.warning(
                    "batch of %d failed (%s); retrying one by one", len(shares), type(exc).__name__
                )
                return _Split(hold=hold)
            refusal = refusal_of(exc)
            if refusal is not None:
                await self._tell_refused(refusal, shares[0].row.message_id)
            return [_refused(exc)]
        self._committed(shares, applied, started)
        return [Outcome(Fate.STORED, applied=s.row.message_id in applied) for s in shares]

    async def _held(self, rows: Sequence[SealedRow], stop: asyncio.Event) -> set[str]:
        """Upsert; while that fails transiently, hold the batch in hand and retry with
        jittered, growing pauses (no redelivery churn) until `stop`."""
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
                    applied = await self._store.upsert_batch(rows)
                except TRANSIENT_ERRORS:
                    # Holding is right while the database is away; when it answers and the
                    # batch still fails (locks, conflicts), the retry queues let others through.
                    state.answers = await _database_answers(self._store)
                    if state.answers and state.elapsed >= self._hold and not stop.is_set():
                        raise HoldGivenUp from None
                    raise
        if state.tries > 0:
            log.info("database back after %.1fs; stored %d held messages", state.elapsed, len(rows))
        return applied

    async def _tell_refused(self, reason: str, message_id: str) -> None:
        """A gateway waiting for this share answers its caller 409 instead of waiting in vain
        (without the notice it answers `queued` when its wait runs out: the share is parked)."""
        try:
            async with asyncio.timeout(2.0):
                await self._store.notify_refused(reason, [message_id])
        except (*TRANSIENT_ERRORS, *DATABASE_ERRORS) as exc:
            log.info("refusal of %s not announced (%s)", message_id, type(exc).__name__)

    def _committed(self, shares: Sequence[Share], applied: set[str], started: float) -> None:
        """The shares are committed (their deliveries are acked after): count and log them."""
        WORKER_COMMIT_SECONDS.observe(time.perf_counter() - started)
        WORKER_BATCH_SIZE.observe(len(shares))
        WORKER_MESSAGES.labels("applied").inc(len(applied))
        WORKER_MESSAGES.labels("stale").inc(len(shares) - len(applied))
        if log.isEnabledFor(logging.DEBUG) or otel.active():
            for share in shares:
                row = share.row
                with (
                    request_context(row.request_id or new_request_id()),
                    otel.span("sharevault.db", share.context, message_id=row.message_id),
                ):
                    log.debug("stored message %s", row.message_id)


def _refused(exc: BaseException) -> Outcome:
    """The database refused this one share: dead if it never can succeed, else retry."""
    if isinstance(exc, PERMANENT_ERRORS):
        return Outcome(Fate.DEAD, Reason.REJECTED, type(exc).__name__)
    return Outcome(Fate.RETRY, Reason.DATABASE_ERROR, type(exc).__name__)


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
        self.tries = 0

    @property
    def elapsed(self) -> float:
        return time.monotonic() - self.started

    def log(self, state: RetryCallState) -> None:
        self.tries += 1
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
