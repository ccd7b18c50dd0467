"""Vacuuming `shares` when autovacuum is off for it: the rule, and the loop that applies it."""

from __future__ import annotations

import asyncio
import logging
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from dataclasses import dataclass
from typing import TYPE_CHECKING

from sharevault.background import running

if TYPE_CHECKING:
    from sharevault.db.store import Store

log = logging.getLogger(__name__)


# vacuuming_shares vacuums once dead rows (heap or TOAST) pass VACUUM_MIN_DEAD + VACUUM_SCALE * live
# rows: autovacuum's own rule (its defaults: 50 + 0.2 * live). A vacuum reads the indexes whole, so
# a scale, not a fixed count, keeps its cost per overwritten share flat as the table grows.
VACUUM_MIN_DEAD = 1000
VACUUM_SCALE = 0.2
# Rows applied between two looks at the statistics; and, once writes stop, one more look after
# this many seconds (a backend reports its counts within 10 s of going idle, ~1 s while busy).
VACUUM_LOOK_EVERY = 1000
VACUUM_LOOK_IDLE = 15.0
# A vacuum is never cut short by the pool's command timeout, but neither does it run forever.
VACUUM_TIMEOUT = 3600.0


@dataclass(frozen=True, slots=True)
class DeadRows:
    """PostgreSQL's statistics of `shares` (heap) and its TOAST table (the sealed shares)."""

    autovacuum: bool  # autovacuum is on, counting, and not disabled for either table
    heap_live: int
    heap_dead: int
    toast_live: int
    toast_dead: int

    def due(self, min_dead: int = VACUUM_MIN_DEAD, scale: float = VACUUM_SCALE) -> bool:
        """Nobody else will vacuum, and the heap or the TOAST holds too many dead rows."""
        if self.autovacuum:
            return False
        return (
            self.heap_dead > min_dead + scale * self.heap_live
            or self.toast_dead > min_dead + scale * self.toast_live
        )


class WriteCount:
    """Rows applied since vacuuming_shares last looked at the dead rows; `due` is set once
    they reach `look_every`."""

    def __init__(self, look_every: int = VACUUM_LOOK_EVERY) -> None:
        self.look_every = look_every
        self.since_look = 0
        self.due = asyncio.Event()

    def add(self, rows: int) -> None:
        self.since_look += rows
        if self.since_look >= self.look_every:
            self.due.set()

    def looked(self) -> bool:
        """Start counting again; whether any row was applied since the last look."""
        wrote = self.since_look > 0
        self.due.clear()
        self.since_look = 0
        return wrote


@asynccontextmanager
async def vacuuming_shares(
    store: Store,
    *,
    enabled: bool = True,
    look_every: int = VACUUM_LOOK_EVERY,
    look_idle: float = VACUUM_LOOK_IDLE,
) -> AsyncIterator[None]:
    """While the block runs, vacuum `shares` when autovacuum is off for it and dead rows pile up,
    looking at the statistics after every `look_every` rows this store applied."""
    if not enabled:
        yield
        return
    store.writes.look_every = look_every
    async with running(_vacuum_loop(store, look_idle), "shares-vacuum"):
        yield


async def _vacuum_loop(store: Store, look_idle: float) -> None:
    stale = False  # the last look may have come before the statistics counted the last writes
    while True:
        # asyncio.timeout, not wait_for: on 3.11 wait_for loses a cancel that races the event.
        try:
            async with asyncio.timeout(look_idle):
                await store.writes.due.wait()
        except TimeoutError:
            if not stale and store.writes.since_look == 0:
                continue
        wrote = store.writes.looked()
        try:
            await store.vacuum_if_due()
        except Exception as exc:  # maintenance never takes the worker down; the next look retries
            log.warning("shares vacuum failed (%s); will look again", type(exc).__name__)
        stale = wrote
