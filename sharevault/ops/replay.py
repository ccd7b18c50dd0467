"""`sharevault replay`: re-feed storage from the ingest journal (a RabbitMQ stream)."""

from __future__ import annotations

import uuid
from collections.abc import AsyncIterator
from dataclasses import dataclass
from datetime import datetime
from typing import Any, Protocol

from sharevault.broker import Broker, BrokerUnavailable, Deliveries, Delivery
from sharevault.clock import ClockDiscipline
from sharevault.crypto import Keyring
from sharevault.db import SealedRow, Store
from sharevault.messages import Envelope
from sharevault.metrics import REPLAY_MESSAGES
from sharevault.ops.times import to_micros
from sharevault.worker.decode import open_body

MARKER = "x-sharevault-marker"
OFFSET = "x-stream-offset"
# A stream hands out deliveries only as credit allows: this many in flight.
PREFETCH = 1000
# Silence this long means the journal has nothing more for us (the end marker should come first).
IDLE_WAIT = 30.0


class Progress(Protocol):
    def start(self, total: int) -> None: ...

    def advance(self, count: int) -> None: ...


@dataclass
class ReplaySummary:
    """Read = applied + already current + skipped + not selected."""

    read: int = 0
    applied: int = 0
    current: int = 0
    skipped: int = 0
    not_selected: int = 0
    first_version: int | None = None


@dataclass(frozen=True)
class ReplayRange:
    since: datetime
    until: datetime | None = None
    client: str | None = None

    def selects(self, row: SealedRow) -> bool:
        if row.version < to_micros(self.since):
            return False
        if self.until is not None and row.version > to_micros(self.until):
            return False
        return self.client is None or row.identity.client_id == self.client


async def replay_journal(
    broker: Broker,
    store: Store,
    keyring: Keyring,
    selection: ReplayRange,
    progress: Progress,
    *,
    batch_size: int = 500,
    max_skew: float = 0.5,
) -> ReplaySummary:
    """Upsert every selected journal message from `since` up to now, in versioned batches."""
    end_offset, marker = await _mark_end(broker)
    summary = ReplaySummary()
    # Versions from the future are judged by PostgreSQL's clock, as the worker does.
    clock = ClockDiscipline(max_skew, interval=0, gateway=False)
    await clock.check(store, timeout=5.0)
    rows: list[SealedRow] = []
    start: dict[str, Any] = {OFFSET: selection.since}
    async with broker.reader(broker.topology.journal, prefetch=PREFETCH, arguments=start) as it:
        started = False
        async for delivery in _until_marker(it, marker):
            if not started:
                progress.start(max(end_offset - _offset(delivery), 1))
                started = True
            for row in _rows(delivery, keyring, summary, clock.latest_version()):
                if selection.selects(row):
                    rows.append(row)
                else:
                    summary.not_selected += 1
            if len(rows) >= batch_size:
                await _store(store, rows, summary)
                rows = []
            await delivery.ack()
            progress.advance(1)
        await _store(store, rows, summary)
    return summary


async def _mark_end(broker: Broker) -> tuple[int, str]:
    """Append a marker to the journal and find its offset: the replay stops there."""
    marker = uuid.uuid4().hex
    journal = broker.topology.journal
    envelope = Envelope(b"{}", f"marker-{marker}", {MARKER: marker}, "application/json")
    await broker.publisher.publish(envelope, routing_key=journal, exchange="", timeout=10)
    async with broker.reader(journal, prefetch=PREFETCH, arguments={OFFSET: "last"}) as it:
        while (delivery := await it.next(IDLE_WAIT)) is not None:
            await delivery.ack()
            if (delivery.headers or {}).get(MARKER) == marker:
                return _offset(delivery), marker
    raise BrokerUnavailable("the journal did not show the end marker in time")


async def _until_marker(it: Deliveries, marker: str) -> AsyncIterator[Delivery]:
    """Journal messages up to our end marker (or IDLE_WAIT seconds of silence)."""
    while (delivery := await it.next(IDLE_WAIT)) is not None:
        mark = (delivery.headers or {}).get(MARKER)
        if mark == marker:
            await delivery.ack()
            return
        if mark is not None:
            await delivery.ack()  # another replay's end marker
            continue
        yield delivery


def _offset(delivery: Delivery) -> int:
    value: Any = (delivery.headers or {}).get(OFFSET, 0)
    return int(value)


def _rows(
    delivery: Delivery, keyring: Keyring, summary: ReplaySummary, latest: int
) -> list[SealedRow]:
    """The shares of one journal message (one, or a batch); counts what can never be stored
    (a forged one as well: sealed for another message, or a version from the future)."""
    decoded = open_body(
        delivery.body,
        keyring,
        content_type=delivery.content_type,
        latest=latest,
    )
    rows = [share.row for share in decoded.shares]
    summary.read += len(rows) + len(decoded.unstorable)
    if decoded.unstorable:
        summary.skipped += len(decoded.unstorable)
        REPLAY_MESSAGES.labels("skipped").inc(len(decoded.unstorable))
    if rows and summary.first_version is None:
        summary.first_version = min(row.version for row in rows)
    return rows


async def _store(store: Store, rows: list[SealedRow], summary: ReplaySummary) -> None:
    if not rows:
        return
    applied = await store.upsert_batch(rows)
    summary.applied += len(applied)
    summary.current += len(rows) - len(applied)
    REPLAY_MESSAGES.labels("applied").inc(len(applied))
    REPLAY_MESSAGES.labels("current").inc(len(rows) - len(applied))
