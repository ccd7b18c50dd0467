"""The drills: each breaks one thing under load and says when the breakage ended."""

from __future__ import annotations

import asyncio
import random
import time
from collections import Counter
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from typing import Any

import asyncpg

from bench.drills.load import BackupLoad, LoadShape
from bench.drills.stack import DrillStack
from sharevault.messages import SHARE_KEY, Envelope
from sharevault.wiring import broker_of

DUPLICATE = "x-drill-duplicate"


@dataclass(frozen=True)
class Plan:
    """How long and how often: `smoke` (CI, seconds) or `full` (the README's table)."""

    name: str
    load: LoadShape
    warmup_acks: int
    between_acks: int  # acknowledgements between two faults of one drill
    worker_kills: int
    gateway_kills: int
    rolling_rounds: int
    broker_cuts: int
    broker_outage: float
    postgres_outage: float
    portal_outage: float
    duplicate_seconds: float
    stall_over: float  # the database stall outlasts REQUEST_BUDGET by this many seconds
    request_budget: float | None  # REQUEST_BUDGET of every drill's processes (None: default)
    steady_seconds: float
    settle_seconds: float  # load kept on after recovery, before the drain
    recover_timeout: float
    drain_timeout: float
    node_down: float = 60.0  # a RabbitMQ node stopped this long (rabbitmq-node-stop)
    promote_after: float = 2.0  # PostgreSQL primary lost this long before the replica is promoted


SMOKE = Plan(
    name="smoke",
    load=LoadShape(custodian_writers=8, client_writers=4, share_bytes=1024, pause=0.03),
    warmup_acks=20,
    between_acks=15,
    worker_kills=2,
    gateway_kills=1,
    rolling_rounds=1,
    broker_cuts=1,
    broker_outage=2.0,
    postgres_outage=2.0,
    portal_outage=2.5,
    duplicate_seconds=2.0,
    stall_over=2.0,
    # Short, so that the stall drill stays short: COMMIT_WAIT 2 + PUBLISH_TIMEOUT 2 + DB_TIMEOUT 1.
    request_budget=5.0,
    steady_seconds=2.0,
    settle_seconds=0.3,
    recover_timeout=30.0,
    drain_timeout=30.0,
    node_down=10.0,
    promote_after=1.0,
)
FULL = Plan(
    name="full",
    load=LoadShape(custodian_writers=24, client_writers=8, share_bytes=4096, pause=0.02),
    warmup_acks=100,
    between_acks=150,
    worker_kills=5,
    gateway_kills=3,
    rolling_rounds=2,
    broker_cuts=3,
    broker_outage=30.0,
    postgres_outage=60.0,
    portal_outage=20.0,
    duplicate_seconds=20.0,
    stall_over=5.0,
    request_budget=None,
    steady_seconds=30.0,
    settle_seconds=3.0,
    recover_timeout=120.0,
    drain_timeout=120.0,
)
PLANS = {"smoke": SMOKE, "full": FULL}


@dataclass
class DrillContext:
    stack: DrillStack
    load: BackupLoad
    plan: Plan
    fault_end: float | None = None  # monotonic; None: nothing to recover from
    fault_end_wall: float = 0.0
    notes: dict[str, Any] = field(default_factory=dict)
    # Run once recovery is measured (a killed node started again for the next drill).
    afterwards: list[Callable[[], Awaitable[None]]] = field(default_factory=list)

    def end_fault(self) -> None:
        self.fault_end, self.fault_end_wall = time.monotonic(), time.time()

    async def more_acks(self, count: int, timeout: float = 60) -> None:
        """Let the load get `count` more acknowledgements (work is flowing through the stack)."""
        target = self.load.ledger.acknowledged + count
        deadline = time.monotonic() + timeout
        while self.load.ledger.acknowledged < target:
            if time.monotonic() > deadline:
                raise RuntimeError(f"load stalled: {dict(self.load.ledger.answers)}")
            await asyncio.sleep(0.02)

    async def requests_in_flight(self, count: int, timeout: float = 10) -> None:
        """Wait (briefly) until at least `count` requests are awaiting their answer."""
        deadline = time.monotonic() + timeout
        while self.load.ledger.in_flight < count and time.monotonic() < deadline:
            await asyncio.sleep(0.001)


@dataclass(frozen=True)
class Drill:
    slug: str
    name: str
    inject: Callable[[DrillContext], Awaitable[None]]
    workers: int = 1
    proxy: bool = False
    private_pg: bool = False
    rabbit_cluster: bool = False  # a private 3-node RabbitMQ cluster (tests/support)
    pg_replica: str | None = None  # "sync" or "async": a private primary with a streaming replica
    gateways: int = 1
    smoke: bool = True  # part of the smoke form (without --only)


async def worker_sigkill(ctx: DrillContext) -> None:
    """SIGKILL a worker with a batch in hand, start another at once; several times. The first
    worker is never killed: it takes over the killed one's deliveries and, stopping cleanly at
    the end, reports how often a message was delivered (a killed worker's count dies with it)."""
    for _ in range(ctx.plan.worker_kills):
        await ctx.more_acks(ctx.plan.between_acks)
        await asyncio.sleep(random.uniform(0, 0.2))
        # Requests waiting for their commit: their messages are in the worker's hands.
        await ctx.requests_in_flight(ctx.plan.load.custodian_writers // 2)
        await ctx.stack.kill(ctx.stack.live_workers()[-1], crash=True)
        fresh = await ctx.stack.start_worker()
        ctx.end_fault()
        await ctx.stack.worker_consuming(fresh)
    ctx.notes["kills"] = ctx.plan.worker_kills


async def gateway_sigkill(ctx: DrillContext) -> None:
    """SIGKILL the gateway while requests are in flight, start it again on the same port."""
    in_flight = []
    for _ in range(ctx.plan.gateway_kills):
        await ctx.more_acks(ctx.plan.between_acks)
        await ctx.requests_in_flight(1)
        in_flight.append(ctx.load.ledger.in_flight)
        assert ctx.stack.gateway is not None
        await ctx.stack.kill(ctx.stack.gateway)
        await ctx.stack.start_gateway()
        ctx.end_fault()
        await ctx.stack.gateway_ready()
    ctx.notes["requests_in_flight_at_kill"] = in_flight


async def rolling_restart(ctx: DrillContext) -> None:
    """SIGTERM each worker in turn, a replacement consuming before the next one goes."""
    codes = []
    for _ in range(ctx.plan.rolling_rounds):
        for worker in ctx.stack.live_workers():
            await ctx.more_acks(ctx.plan.between_acks)
            codes.append(await worker.terminate(30))
            fresh = await ctx.stack.start_worker()
            ctx.end_fault()
            await ctx.stack.worker_consuming(fresh)
    ctx.notes["exit_codes"] = codes


async def broker_cut(ctx: DrillContext) -> None:
    """Reset every broker connection (gateway and workers) at once, reconnects allowed."""
    assert ctx.stack.proxy is not None
    for _ in range(ctx.plan.broker_cuts):
        await ctx.more_acks(ctx.plan.between_acks)
        ctx.stack.proxy.cut()
        await asyncio.sleep(0.2)
        ctx.stack.proxy.restore()
        ctx.end_fault()
        await ctx.stack.gateway_ready()
    ctx.notes["cuts"] = ctx.plan.broker_cuts


async def broker_unreachable(ctx: DrillContext) -> None:
    """Cut every broker connection and refuse new ones for the outage."""
    assert ctx.stack.proxy is not None
    await ctx.more_acks(ctx.plan.between_acks)
    ctx.stack.proxy.cut()
    await asyncio.sleep(ctx.plan.broker_outage)
    ctx.stack.proxy.restore()
    ctx.end_fault()
    ctx.notes["outage_s"] = ctx.plan.broker_outage
    ctx.notes["connections_refused"] = ctx.stack.proxy.refused


async def postgres_stop(ctx: DrillContext) -> None:
    """Stop the (private) PostgreSQL cluster like a crash, start it again after the outage."""
    cluster = ctx.stack.cluster
    assert cluster is not None
    await ctx.more_acks(ctx.plan.between_acks)
    await asyncio.to_thread(cluster.stop, "immediate")
    ctx.stack.crashes.append(time.monotonic())
    await asyncio.sleep(ctx.plan.postgres_outage)
    await asyncio.to_thread(cluster.start)
    ctx.end_fault()
    ctx.notes["outage_s"] = ctx.plan.postgres_outage


def portal_fault(kind: str) -> Callable[[DrillContext], Awaitable[None]]:
    """Portal answers 500, or 429 with Retry-After, or too slowly, for the outage."""

    async def inject(ctx: DrillContext) -> None:
        portal = ctx.stack.portal
        await ctx.more_acks(ctx.plan.between_acks)
        before = len(portal.calls)
        if kind == "5xx":
            portal.fail(500)
        elif kind == "429":
            portal.fail(429, retry_after=1)
        else:
            portal.delay = float(ctx.stack.values()["portal_timeout"]) + 1.0
        await asyncio.sleep(ctx.plan.portal_outage)
        portal.heal()
        ctx.end_fault()
        during = portal.calls[before:]
        ctx.notes["portal_calls_failed"] = sum(1 for c in during if c.status >= 400)
        ctx.notes["portal_calls_undelivered"] = sum(1 for c in during if not c.delivered)

    return inject


# Above REQUEST_BUDGET, an answer still counts as inside it: the time to send it and read it on a
# loaded machine (Portal's own limit is 10 s, a second past the default budget).
BUDGET_MARGIN = 1.0
STALL_READS_EVERY = 1.0


async def database_stall(ctx: DrillContext) -> None:
    """Lock `shares` (ACCESS EXCLUSIVE) under load for longer than REQUEST_BUDGET, reading the
    client's shares meanwhile as Portal and the app would; every answer must come inside it."""
    budget = ctx.stack.settings().request_budget
    app, token = ctx.load.app_clients[0]
    driver = ctx.load.driver

    async def timed(call: Awaitable[Any]) -> tuple[float, int]:
        sent = time.monotonic()
        answer = await call
        return time.monotonic() - sent, answer.status

    await ctx.more_acks(ctx.plan.between_acks)
    reads: list[asyncio.Task[tuple[float, int]]] = []
    locker = await asyncpg.connect(ctx.stack.database_url)
    try:
        async with locker.transaction():
            await locker.execute("LOCK TABLE shares IN ACCESS EXCLUSIVE MODE")
            start = time.monotonic()
            while time.monotonic() - start < budget + ctx.plan.stall_over:
                reads.append(asyncio.create_task(timed(driver.fetch(app))))
                reads.append(
                    asyncio.create_task(timed(driver.client_get(app, token, method="GDRIVE")))
                )
                await asyncio.sleep(STALL_READS_EVERY)
            end = time.monotonic()
    finally:
        await locker.close()
    ctx.end_fault()
    answered = await asyncio.gather(*reads)
    # Writes sent during the stall may still be waiting: they have the budget to answer.
    await asyncio.sleep(max(0.0, end + budget + BUDGET_MARGIN - time.monotonic()))
    slowest_write, writes = ctx.load.ledger.slowest(start, end)
    slowest = max([slowest_write, *(took for took, _ in answered)])
    ctx.notes["stall_s"] = round(end - start, 1)
    ctx.notes["budget_s"] = budget
    ctx.notes["slowest_answer_s"] = round(slowest, 2)
    ctx.notes["writes_during_stall"] = {str(s): n for s, n in sorted(writes.items())}
    ctx.notes["reads_during_stall"] = dict(Counter(str(s) for _, s in answered))
    ctx.notes["budget_held"] = slowest < budget + BUDGET_MARGIN


async def duplicate_delivery(ctx: DrillContext) -> None:
    """Every message the gateway published goes to the queue a second time, while load runs."""
    published = 0
    deadline = time.monotonic() + ctx.plan.duplicate_seconds
    async with broker_of(ctx.stack.settings(), name="drill-duplicator") as broker:
        await broker.wait_ready(10)
        journal = broker.topology.journal
        offset: dict[str, Any] = {"x-stream-offset": "first"}
        async with broker.reader(journal, prefetch=200, arguments=offset) as deliveries:
            while time.monotonic() < deadline:
                delivery = await deliveries.next(0.2)
                if delivery is None:
                    continue
                if DUPLICATE not in (delivery.headers or {}):
                    again = Envelope(
                        delivery.body,
                        delivery.message_id or "",
                        {DUPLICATE: 1},
                        delivery.content_type,
                    )
                    await broker.publisher.publish(again, routing_key=SHARE_KEY, timeout=5)
                    published += 1
                await delivery.ack()
    ctx.end_fault()
    ctx.notes["duplicates_published"] = published


async def three_workers(ctx: DrillContext) -> None:
    """Three workers share the queues (and the outbox) under load; nothing is broken."""
    await asyncio.sleep(ctx.plan.steady_seconds)
    ctx.notes["workers_consuming"] = len(ctx.stack.live_workers())


DRILLS = [
    Drill("worker-sigkill", "worker SIGKILL mid-batch", worker_sigkill, workers=2),
    Drill("gateway-sigkill", "gateway SIGKILL mid-request", gateway_sigkill),
    Drill("rolling-restart", "rolling SIGTERM restart of workers", rolling_restart, workers=2),
    Drill("broker-cut", "broker connections cut", broker_cut, proxy=True),
    Drill("broker-unreachable", "broker unreachable", broker_unreachable, proxy=True),
    Drill("postgres-stop", "PostgreSQL stopped", postgres_stop, private_pg=True),
    Drill("portal-5xx", "Portal answers 5xx", portal_fault("5xx")),
    Drill("portal-429", "Portal answers 429", portal_fault("429")),
    Drill("portal-timeout", "Portal times out", portal_fault("timeout")),
    # Not in the smoke form: the stall outlasts the budget, then the writes it held drain (about
    # 45 s on a loaded machine); tests/drills/test_drill_stall.py runs it alone.
    Drill("database-stall", "PostgreSQL stalled (tables locked)", database_stall, smoke=False),
    Drill("duplicate", "same message delivered twice", duplicate_delivery),
    Drill("three-workers", "three workers at once", three_workers, workers=3),
]
