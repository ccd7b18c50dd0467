"""Deliveries in hand: live traffic first, the backlog fills what room is left in a batch."""

from __future__ import annotations

import asyncio
import time
from collections import OrderedDict, deque
from collections.abc import Callable

from sharevault.broker import Delivery


class Inbox:
    """Two lanes, one batch at a time: a live message never waits behind the backlog in hand.
    Batches are sized in shares: `weight` tells how many a delivery carries."""

    def __init__(self, weight: Callable[[Delivery], int] = lambda _d: 1) -> None:
        self._live: deque[Delivery] = deque()
        self._backlog: deque[Delivery] = deque()
        self._arrived = asyncio.Event()
        self._weight = weight

    def put(self, delivery: Delivery, *, live: bool) -> None:
        (self._live if live else self._backlog).append(delivery)
        self._arrived.set()

    def clear(self) -> None:
        self._live.clear()
        self._backlog.clear()
        self._arrived.clear()

    def __len__(self) -> int:
        return len(self._live) + len(self._backlog)

    def take(self, limit: int) -> tuple[list[Delivery], int]:
        """Deliveries carrying up to `limit` shares (at least one delivery), every live one
        before any from the backlog; and how many shares they carry."""
        batch: list[Delivery] = []
        shares = 0
        for lane in (self._live, self._backlog):
            while lane and (not batch or shares + self._weight(lane[0]) <= limit):
                delivery = lane.popleft()
                batch.append(delivery)
                shares += self._weight(delivery)
        if not self:
            self._arrived.clear()
        return batch, shares

    async def next_batch(self, stop: asyncio.Event, size: int, linger: float) -> list[Delivery]:
        """Wait for a first delivery (or `stop`), then gather up to `size` shares for `linger`
        seconds at most."""
        if not self:
            arrived = asyncio.ensure_future(self._arrived.wait())
            stopped = asyncio.ensure_future(stop.wait())
            await asyncio.wait({arrived, stopped}, return_when=asyncio.FIRST_COMPLETED)
            for task in (arrived, stopped):
                task.cancel()
            if not self:
                return []
        batch, shares = self.take(size)
        deadline = time.monotonic() + linger
        while shares < size:
            remaining = deadline - time.monotonic()
            if remaining <= 0:
                break
            if not self:
                try:
                    async with asyncio.timeout(remaining):
                        await self._arrived.wait()
                except TimeoutError:
                    break
                continue  # what arrived is weighed like the rest
            if self._weight(self._next()) > size - shares:
                break  # the next one would make the batch too big: it starts the next batch
            more, weight = self.take(size - shares)
            batch.extend(more)
            shares += weight
        return batch

    def _next(self) -> Delivery:
        return self._live[0] if self._live else self._backlog[0]


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
