"""Read-your-writes: wait until the worker has committed (or superseded) a published message."""

from __future__ import annotations

import asyncio
import logging
from dataclasses import dataclass
from enum import Enum

from sharevault.crypto import Identity
from sharevault.db import TRANSIENT_ERRORS, Store

log = logging.getLogger(__name__)

RECHECK_EVERY = 1.0


class Verdict(Enum):
    """What became of a published message, as far as its waiter knows."""

    COMMITTED = "committed"  # stored, or superseded by a newer version
    REFUSED = "refused"  # the database refused it for a bound (`reason`): it is dead-lettered
    OPEN = "open"  # not known yet: still in the queue, or its notice was missed


@dataclass(slots=True)
class _Pending:
    # Resolved by a commit or refusal notice, or OPEN by the waiter's own timer when a period
    # ends first; then the waiter puts a fresh future in its place for the next period.
    future: asyncio.Future[Verdict]
    identity: Identity
    version: tuple[int, str]
    reason: str | None = None  # of a refusal


def _period_over(future: asyncio.Future[Verdict]) -> None:
    if not future.done():
        future.set_result(Verdict.OPEN)


class CommitWaiter:
    """Futures by message id, woken by commit notices and confirmed against the table."""

    def __init__(self, store: Store, *, check_timeout: float = 1.0) -> None:
        self._store = store
        # Longest a look at the table may take: a stalled database never holds a waiter past
        # its budget (nor the listener's re-check after a reconnect).
        self._check_timeout = check_timeout
        self._pending: dict[str, _Pending] = {}

    def expect(self, message_id: str, identity: Identity, version: int) -> None:
        """Register before publishing, so that a fast commit notice cannot be missed."""
        fut = asyncio.get_running_loop().create_future()
        self._pending[message_id] = _Pending(fut, identity, (version, message_id))

    def forget(self, message_id: str) -> None:
        self._pending.pop(message_id, None)

    def on_committed(self, message_ids: list[str]) -> None:
        for message_id in message_ids:
            pending = self._pending.get(message_id)
            if pending is not None and not pending.future.done():
                pending.future.set_result(Verdict.COMMITTED)

    def on_refused(self, reason: str, message_ids: list[str]) -> None:
        for message_id in message_ids:
            pending = self._pending.get(message_id)
            if pending is not None:
                pending.reason = reason
                if not pending.future.done():
                    pending.future.set_result(Verdict.REFUSED)

    def reason(self, message_id: str) -> str | None:
        """Why the database refused this message (after `wait` answered REFUSED)."""
        pending = self._pending.get(message_id)
        return None if pending is None else pending.reason

    async def _settled_in_table(self, pending: _Pending, timeout: float) -> bool:
        try:
            stored = await self._store.stored_version(pending.identity, timeout=timeout)
        except TRANSIENT_ERRORS:
            return False
        return stored is not None and stored >= pending.version

    async def recheck_all(self) -> None:
        """After the listener reconnects: notices may have been missed while it was away."""
        for message_id, pending in list(self._pending.items()):
            if not pending.future.done() and await self._settled_in_table(
                pending, self._check_timeout
            ):
                self.on_committed([message_id])

    async def wait(self, message_id: str, budget: float, last_look: float | None = None) -> Verdict:
        """COMMITTED once committed or superseded, REFUSED once refused; OPEN when the budget
        runs out first. The last look at the table may take up to `last_look` more (default
        `check_timeout`): the caller leaves room for it."""
        pending = self._pending.get(message_id)
        if pending is None:
            return Verdict.OPEN
        loop = asyncio.get_running_loop()
        deadline = loop.time() + budget
        while True:
            remaining = deadline - loop.time()
            if remaining <= 0:
                look = self._check_timeout if last_look is None else last_look
                settled = await self._settled_in_table(pending, look)
                return Verdict.COMMITTED if settled else Verdict.OPEN
            # One timer that resolves the future itself when the period ends first: a timeout
            # and a shield per wait cost more than twice as much.
            future = pending.future
            if not future.done():
                timer = loop.call_later(min(remaining, RECHECK_EVERY), _period_over, future)
                try:
                    await future
                finally:
                    timer.cancel()
            verdict = future.result()
            if verdict is not Verdict.OPEN:
                return verdict
            # A notice must always find a future to resolve: a fresh one takes the place of the
            # spent one before the table is asked, so that a notice arriving while it answers
            # wakes the next period at once. (A wait cancelled with its request takes its future
            # along; the request forgets the message right after.)
            pending.future = loop.create_future()
            # A notice can be lost (listener reconnecting): the table has the last word.
            left = deadline - loop.time()
            if left > 0 and await self._settled_in_table(pending, min(self._check_timeout, left)):
                return Verdict.COMMITTED

    @property
    def in_flight(self) -> int:
        return len(self._pending)
