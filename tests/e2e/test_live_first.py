"""Live traffic first: a backlog draining, or a journal replay running, must not hold a fresh
`/backup` → `/backup/fetch` past the read-your-writes budget.

CI runs reduced sizes. The full case of the issue (100,000 messages) runs with
`SHAREVAULT_TEST_BACKLOG=100000 .venv/bin/pytest tests/e2e/test_live_first.py -s`, which also
prints the figures docs/queues.md quotes."""

from __future__ import annotations

import asyncio
import os
import subprocess
import sys
import time
from collections.abc import Callable
from typing import Any

import asyncpg
import pytest

from sharevault.broker import Broker
from sharevault.config import Settings
from sharevault.crypto import Identity, Keyring
from sharevault.messages import ShareMessage
from sharevault.service.appkeys import ROUTE
from sharevault.wiring import broker_of
from tests.support.backupload import Client
from tests.support.environment import secret_headers
from tests.support.leakcheck import subprocess_log
from tests.support.processes import WorkerProcess, outage_env
from tests.support.sharing import publish_share

pytestmark = pytest.mark.slow

BACKLOG = int(os.environ.get("SHAREVAULT_TEST_BACKLOG", "12000"))
REPLAY = int(os.environ.get("SHAREVAULT_TEST_REPLAY", str(min(BACKLOG, 6000))))
SHARE = "live-first-backlog-share-" + "s" * 2000
# Measurement knobs: docs/queues.md compares a live TTL of 60 s (the backlog stays in the
# live queue: plain FIFO) with the default; the test's assertions hold for the latter only.
LIVE_TTL = float(os.environ.get("SHAREVAULT_TEST_LIVE_TTL", "0.5"))
PROBE_EVERY = 0.25
FIFO_TTL = 30.0


async def publish_backlog(settings: Settings, count: int, prefix: str) -> float:
    """`count` messages exactly as the gateway publishes them (live queue + journal)."""
    keyring = Keyring(settings.keyring)
    in_flight = asyncio.Semaphore(64)
    started = time.monotonic()
    async with broker_of(settings, name="backlog") as broker:
        await broker.wait_ready(10)

        async def one(n: int) -> None:
            async with in_flight:
                identity = Identity("custodian", f"{prefix}-{n}", "GDRIVE", "")
                message_id, version = f"{prefix}{n:08d}", time.time_ns() // 1000
                message = ShareMessage.build(
                    message_id=message_id,
                    version=version,
                    identity=identity,
                    sealed=keyring.seal(SHARE.encode(), identity, version, message_id),
                )
                await publish_share(broker, message, timeout=30)

        await asyncio.gather(*(one(n) for n in range(count)))
    return time.monotonic() - started


async def fresh_round_trip(gateway: Client, client_id: str) -> tuple[float, str, list[str]]:
    """One Portal-like `/backup` then `/backup/fetch`: seconds, status, shares fetched."""
    share = f"fresh-share-{client_id}"
    started = time.monotonic()
    resp = await gateway.post(
        "/webhook/backup",
        json={"clientId": client_id, "backupMethod": "GDRIVE", "share": share},
        headers=secret_headers(),
    )
    assert resp.status == 200
    status = (await resp.json())["status"]
    fetched = await gateway.post(
        "/webhook/backup/fetch", json={"clientId": client_id}, headers=secret_headers()
    )
    shares = (await fetched.json())["backupShares"]
    return time.monotonic() - started, status, shares


async def count_rows(db: asyncpg.Connection, prefix: str) -> int:
    return int(await db.fetchval("SELECT count(*) FROM shares WHERE client_id LIKE $1", prefix))


async def depth(broker: Broker, queue: str) -> int:
    return await broker.admin.queue_depth(queue)


async def test_live_writes_overtake_a_draining_backlog(
    settings_factory: Callable[..., Settings],
    gateway_factory: Callable[..., Any],
    workers: Callable[[dict[str, str]], WorkerProcess],
    db: asyncpg.Connection,
) -> None:
    settings = settings_factory(live_ttl=LIVE_TTL)
    gateway: Client = await gateway_factory(settings)
    # The workers were away: the backlog piles up, and the broker moves it out of the live queue.
    seconds = await publish_backlog(settings, BACKLOG, "bk")
    async with broker_of(settings, name="watch") as broker:
        await broker.wait_ready(10)
        if LIVE_TTL < FIFO_TTL:
            await _until(lambda: _moved(broker), timeout=60 + BACKLOG / 1000)
        worker = workers(outage_env(settings))
        started = time.monotonic()
        await _until(lambda: count_rows(db, "bk-%"), timeout=30)
        # Writes in the gateway's detour window (DETOUR_CHECK after the worker came back) go to
        # the backlog by design (docs/queues.md); overtaking is measured from the route back live.
        await _until(lambda: _routed_live(gateway), timeout=30)
        rounds: list[tuple[float, str, bool, int]] = []
        # Portal-like probes all along the drain.
        while (stored := await count_rows(db, "bk-%")) < BACKLOG:
            took, status, shares = await fresh_round_trip(gateway, f"fresh-{len(rounds)}")
            rounds.append((took, status, shares == [f"fresh-share-fresh-{len(rounds)}"], stored))
            assert time.monotonic() - started < 60 + BACKLOG / 500, "the backlog did not drain"
            await asyncio.sleep(PROBE_EVERY)
        drained = time.monotonic() - started
    stats = await worker.stop()
    _report(f"backlog of {BACKLOG}: published in {seconds:.1f}s, drained in {drained:.1f}s", rounds)
    assert all(status == "committed" and ok for _, status, ok, _ in rounds), rounds
    # Overtaking, not luck: the first fresh write was stored while most of the backlog waited.
    assert rounds and rounds[0][3] < BACKLOG / 2, rounds
    assert stats["max_deliveries"] == 1


def _report(title: str, rounds: list[tuple[float, str, bool, int]]) -> None:
    """Figures for docs/queues.md (shown with -s)."""
    took = sorted(r[0] * 1000 for r in rounds)
    if not took:
        return
    statuses = sorted({r[1] for r in rounds})
    print(
        f"\n{title}; {len(took)} fresh round trips meanwhile: p50 {took[len(took) // 2]:.0f} ms,"
        f" p95 {took[int(len(took) * 0.95)]:.0f} ms, max {took[-1]:.0f} ms, status {statuses}"
    )


async def _moved(broker: Broker) -> bool:
    """The live queue is empty and the backlog queue holds what it had (the broker moves a
    message at least once: it leaves the live queue once the backlog queue has it). Messages,
    not shares: the publisher coalesces shares into batches."""
    live = await broker.admin.queue_depth(broker.topology.shares)
    return live == 0 and await broker.admin.queue_depth(broker.topology.backlog) > 0


async def _routed_live(gateway: Client) -> bool:
    return not gateway.app[ROUTE].detoured


async def _stored(db: asyncpg.Connection, pattern: str, count: int) -> bool:
    return await count_rows(db, pattern) >= count


async def _until(check: Callable[[], Any], timeout: float) -> None:
    deadline = time.monotonic() + timeout
    while not await check():
        assert time.monotonic() < deadline, "condition not met in time"
        await asyncio.sleep(0.1)


async def test_live_writes_are_not_held_up_by_a_journal_replay(
    settings: Settings,
    gateway: Client,
    workers: Callable[[dict[str, str]], WorkerProcess],
    db: asyncpg.Connection,
) -> None:
    worker = workers(outage_env(settings))
    await publish_backlog(settings, REPLAY, "rp")
    await _until(lambda: _stored(db, "rp-%", REPLAY), timeout=60 + REPLAY / 500)
    await db.execute("DELETE FROM shares")
    log = subprocess_log("replay")
    replay = subprocess.Popen(
        [sys.executable, "-m", "sharevault", "replay", "--since", "1h", "--json"],
        env=outage_env(settings),
        stdout=subprocess.PIPE,
        stderr=log,
    )
    started = time.monotonic()
    try:
        await _until(lambda: count_rows(db, "rp-%"), timeout=30)
        rounds: list[tuple[float, str, bool, int]] = []
        while replay.poll() is None:
            took, status, shares = await fresh_round_trip(gateway, f"fresh-{len(rounds)}")
            stored = await count_rows(db, "rp-%")
            rounds.append((took, status, shares == [f"fresh-share-fresh-{len(rounds)}"], stored))
            await asyncio.sleep(PROBE_EVERY)
        out, _ = await asyncio.to_thread(replay.communicate, timeout=120)
    finally:
        if replay.poll() is None:
            replay.kill()
        log.close()
    elapsed = time.monotonic() - started
    await worker.stop()
    _report(f"replay of {REPLAY} in {elapsed:.1f}s: {out.decode().strip()}", rounds)
    assert replay.returncode == 0
    assert rounds, "the replay ended before a single probe"
    assert all(status == "committed" and ok for _, status, ok, _ in rounds), rounds
    # The first probe ran while the replay was still writing (how far it had got by then depends
    # on the machine's speed: 2,048-3,072 of 6,000 rows were seen within 0.6 s).
    assert rounds[0][3] < REPLAY, "no probe ran while the replay was writing"
    assert await count_rows(db, "rp-%") == REPLAY
