"""Deliveries in hand: live traffic first, the backlog fills what room is left in a batch."""

from __future__ import annotations

import asyncio
import time
from collections import OrderedDict, deque

from aio_pika.abc import AbstractIncomingMessage


class Inbox:
    """Two lanes, one batch at a time: a live message never waits behind the backlog in hand."""

    def __init__(self) -> None:
        self._live: deque[AbstractIncomingMessage] = deque()
        self._backlog: deque[AbstractIncomingMessage] = deque()
        self._arrived = asyncio.Event()

    def put(self, delivery: AbstractIncomingMessage, *, live: bool) -> None:
        (self._live if live else self._backlog).append(delivery)
        self._arrived.set()

    def clear(self) -> None:
        self._live.clear()
        self._backlog.clear()
        self._arrived.clear()

    def __len__(self) -> int:
        return len(self._live) + len(self._backlog)

    def take(self, limit: int) -> list[AbstractIncomingMessage]:
        """Up to `limit` deliveries, every live one before any from the backlog."""
        batch: list[AbstractIncomingMessage] = []
        for lane in (self._live, self._backlog):
            while lane and len(batch) < limit:
                batch.append(lane.popleft())
        if not self:
            self._arrived.clear()
        return batch

    async def next_batch(
        self, stop: asyncio.Event, size: int, linger: float
    ) -> list[AbstractIncomingMessage]:
        """Wait for a first delivery (or `stop`), then gather more for `linger` seconds at most."""
        if not self:
            arrived = asyncio.ensure_future(self._arrived.wait())
            stopped = asyncio.ensure_future(stop.wait())
            await asyncio.wait({arrived, stopped}, return_when=asyncio.FIRST_COMPLETED)
            for task in (arrived, stopped):
                task.cancel()
            if not self:
                return []
        batch = self.take(size)
        deadline = time.monotonic() + linger
        while len(batch) < size:
            remaining = deadline - time.monotonic()
            if remaining <= 0:
                break
            if not self:
                try:
                    await asyncio.wait_for(self._arrived.wait(), remaining)
                except TimeoutError:
                    break
            batch.extend(self.take(size - len(batch)))
        return batch


class DeliveryCounter:
    """How often this worker received each recent message id (bounded memory, oldest forgotten)."""

    def __init__(self, capacity: int = 200_000) -> None:
        self._seen: OrderedDict[str, int] = OrderedDict()
        self._capacity = capacity

    def count(self, message_id: str | None) -> int:
        """Record one more delivery of `message_id`; the number of deliveries so far."""
        if not message_id:
            return 1
        times = self._seen.pop(message_id, 0) + 1
        self._seen[message_id] = times
        if len(self._seen) > self._capacity:
            self._seen.popitem(last=False)
        return times
