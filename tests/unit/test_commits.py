"""The read-your-writes waiter, against a stand-in for the one query it asks of the table."""

from __future__ import annotations

import asyncio
from typing import cast

import pytest

from sharevault.crypto import Identity
from sharevault.db import Store
from sharevault.service import commits
from sharevault.service.commits import CommitWaiter, Verdict

COMMITTED, OPEN = Verdict.COMMITTED, Verdict.OPEN
ALICE = Identity("custodian", "cl-alice", "GDRIVE", "pair-1")
VERSION = 1_000


class Table:
    """Stands in for `Store.stored_version`: the stored (version, message id) of an identity,
    and how often it was asked; `hold` keeps the answer back until the test releases it."""

    def __init__(self) -> None:
        self.rows: dict[Identity, tuple[int, str]] = {}
        self.asked = 0
        self.hold: asyncio.Event | None = None
        self.asking = asyncio.Event()

    async def stored_version(
        self, identity: Identity, *, timeout: float | None = None
    ) -> tuple[int, str] | None:
        self.asked += 1
        self.asking.set()
        if self.hold is not None:
            await self.hold.wait()
        return self.rows.get(identity)


@pytest.fixture(autouse=True)
def short_periods(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(commits, "RECHECK_EVERY", 0.02)


def waiter_on(table: Table) -> CommitWaiter:
    waiter = CommitWaiter(cast(Store, table))
    waiter.expect("m1", ALICE, VERSION)
    return waiter


async def test_a_notice_before_the_wait_answers_at_once() -> None:
    table = Table()
    waiter = waiter_on(table)
    waiter.on_committed(["m1"])
    assert await waiter.wait("m1", 5.0) is COMMITTED
    assert table.asked == 0


async def test_a_notice_during_the_wait_ends_it_without_asking_the_table() -> None:
    table = Table()
    waiter = waiter_on(table)
    task = asyncio.create_task(waiter.wait("m1", 5.0))
    await asyncio.sleep(0)
    waiter.on_committed(["other", "m1"])
    assert await task is COMMITTED
    assert table.asked == 0


async def test_a_lost_notice_is_made_up_for_by_the_table() -> None:
    table = Table()
    waiter = waiter_on(table)
    table.rows[ALICE] = (VERSION, "m1")
    assert await waiter.wait("m1", 5.0) is COMMITTED
    assert table.asked == 1


async def test_a_newer_share_in_the_table_settles_the_wait() -> None:
    table = Table()
    waiter = waiter_on(table)
    table.rows[ALICE] = (VERSION + 1, "m0")
    assert await waiter.wait("m1", 5.0) is COMMITTED


async def test_the_table_is_asked_every_period_and_when_the_budget_ends() -> None:
    table = Table()
    waiter = waiter_on(table)
    assert await waiter.wait("m1", 0.07) is OPEN
    # After each period of 0.02 s in a budget of 0.07 s, and once more at its end.
    assert table.asked >= 2


async def test_the_table_has_the_last_word_when_the_budget_is_shorter_than_a_period() -> None:
    table = Table()
    waiter = waiter_on(table)
    table.rows[ALICE] = (VERSION, "m1")
    assert await waiter.wait("m1", 0.01) is COMMITTED
    assert table.asked == 1


class StalledTable(Table):
    """A database that never answers: every look lasts its whole timeout, as Store's do."""

    async def stored_version(
        self, identity: Identity, *, timeout: float | None = None
    ) -> tuple[int, str] | None:
        self.asked += 1
        async with asyncio.timeout(timeout):
            await asyncio.Event().wait()
        return None


async def test_a_stalled_table_never_holds_a_wait_past_its_budget_and_one_look() -> None:
    table = StalledTable()
    waiter = CommitWaiter(cast(Store, table), check_timeout=0.05)
    waiter.expect("m1", ALICE, VERSION)
    loop = asyncio.get_running_loop()
    started = loop.time()
    assert await waiter.wait("m1", 0.2) is OPEN
    # The budget, then at most one more look of check_timeout (generous for a loaded machine).
    assert loop.time() - started < 0.2 + 0.05 + 0.2
    assert table.asked >= 2
    waiter.expect("m2", ALICE, VERSION)
    started = loop.time()
    await waiter.recheck_all()  # after a reconnect: each look bounded too
    assert loop.time() - started < 0.05 * 2 + 0.2


async def test_a_notice_after_a_period_ended_still_ends_the_wait() -> None:
    table = Table()
    waiter = waiter_on(table)
    task = asyncio.create_task(waiter.wait("m1", 5.0))
    await table.asking.wait()  # the first period is over and the table found nothing
    waiter.on_committed(["m1"])
    assert await task is COMMITTED
    assert table.asked == 1


async def test_a_notice_while_the_table_answers_wakes_the_next_period_at_once() -> None:
    table = Table()
    table.hold = asyncio.Event()
    waiter = waiter_on(table)
    task = asyncio.create_task(waiter.wait("m1", 5.0))
    await table.asking.wait()  # the first period ended: the table is being asked
    waiter.on_committed(["m1"])  # committed after the table's snapshot
    table.hold.set()  # the table did not see it
    assert await task is COMMITTED
    assert table.asked == 1  # the notice answered, not a second look at the table


async def test_a_cancelled_wait_leaves_nothing_for_a_later_notice_to_trip_on() -> None:
    table = Table()
    waiter = waiter_on(table)
    task = asyncio.create_task(waiter.wait("m1", 5.0))
    await asyncio.sleep(0)
    task.cancel()
    with pytest.raises(asyncio.CancelledError):
        await task
    waiter.on_committed(["m1"])
    await waiter.recheck_all()
    waiter.forget("m1")
    assert waiter.in_flight == 0


async def test_recheck_after_a_reconnect_settles_what_the_table_holds(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.setattr(commits, "RECHECK_EVERY", 60.0)  # only the recheck can end the wait
    table = Table()
    waiter = waiter_on(table)
    waiter.expect("m2", Identity("custodian", "cl-bob", "GDRIVE", ""), VERSION)
    first = asyncio.create_task(waiter.wait("m1", 5.0))
    second = asyncio.create_task(waiter.wait("m2", 0.1))
    await asyncio.sleep(0)
    table.rows[ALICE] = (VERSION, "m1")
    await waiter.recheck_all()
    assert await first is COMMITTED
    assert await second is OPEN


async def test_an_unknown_message_is_not_waited_for() -> None:
    waiter = CommitWaiter(cast(Store, Table()))
    assert await waiter.wait("never-expected", 5.0) is OPEN


async def test_a_refusal_notice_ends_the_wait_with_its_reason() -> None:
    table = Table()
    waiter = waiter_on(table)
    task = asyncio.create_task(waiter.wait("m1", 5.0))
    await asyncio.sleep(0)
    waiter.on_refused("methods_per_client", ["other", "m1"])
    assert await task is Verdict.REFUSED
    assert waiter.reason("m1") == "methods_per_client"
    assert table.asked == 0
