"""Runs drills: a fresh stack each, load, the fault, recovery timed, drain, then the checker."""

from __future__ import annotations

import asyncio
import contextlib
import math
import os
import secrets
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import asyncpg

from bench.drills.check import behind, check, pending_reports_before, stored_shares
from bench.drills.drills import Drill, DrillContext, Plan
from bench.drills.load import BackupLoad
from bench.drills.stack import (
    AMQP_HOST,
    AMQP_PORT,
    PG_ADMIN,
    DrillStack,
    Secrets,
    create_database,
    drop_database,
    dsn_for,
)
from sharevault.config import parse_keyring
from sharevault.crypto import Keyring, generate_keyring_value
from sharevault.db import migrate
from tests.support import FakePortal, GatewayDriver
from tests.support.faultproxy import FaultProxy
from tests.support.pgcluster import PgCluster, multi_host_dsn
from tests.support.rabbitcluster import RabbitCluster

POLL = 0.2


@dataclass
class DrillResult:
    drill: str
    name: str
    acknowledged: int
    lost: int
    regressed: int
    duplicated: int
    max_deliveries: int | None
    recover_s: float | None
    reports_owed: int
    reports_delivered: int
    unreported: int
    reported_twice: int
    reported_twice_in_crash_window: int
    reported_unowed: int
    wrong: int
    holds: bool
    answers: dict[str, int] = field(default_factory=dict)
    committed: int = 0
    queued: int = 0
    worker_stats: list[dict[str, int]] = field(default_factory=list)
    unplanned_exits: list[str] = field(default_factory=list)
    notes: dict[str, Any] = field(default_factory=dict)
    problems: list[str] = field(default_factory=list)
    seconds: float = 0.0


class Run:
    """One run of drills: a migrated template database, a keyring, and a log directory."""

    def __init__(self, plan: Plan, logdir: Path) -> None:
        self.plan = plan
        self.logdir = logdir
        self.run_id = str(os.getpid())
        self.template = f"sv_drill_tpl_{self.run_id}"
        self.secrets = Secrets(secrets.token_urlsafe(24), generate_keyring_value())
        self.keyring = Keyring(parse_keyring(self.secrets.encryption_keys))
        self.tokens: list[str] = []
        self._cluster: PgCluster | None = None
        self._rabbit: RabbitCluster | None = None  # started by the first drill that needs it
        self._replicated: list[PgCluster] = []  # a primary with a replica per failover drill
        self._databases: list[tuple[str, str]] = []  # (admin dsn, name) to drop

    async def __aenter__(self) -> Run:
        await drop_database(PG_ADMIN, self.template)
        await create_database(PG_ADMIN, self.template)
        await migrate(dsn_for(PG_ADMIN, self.template))
        return self

    async def __aexit__(self, *exc: object) -> None:
        for admin, name in [*self._databases, (PG_ADMIN, self.template)]:
            with contextlib.suppress(OSError, asyncpg.PostgresError):
                await drop_database(admin, name)
        for cluster in [*([self._cluster] if self._cluster else []), *self._replicated]:
            await asyncio.to_thread(cluster.destroy)
        if self._rabbit is not None:
            await asyncio.to_thread(self._rabbit.destroy)

    async def _rabbit_started(self) -> RabbitCluster:
        if self._rabbit is None:
            self._rabbit = await asyncio.to_thread(RabbitCluster().start)
        return self._rabbit

    async def _replicated_database(self, sync: bool, name: str) -> tuple[str, PgCluster, PgCluster]:
        """A fresh primary (a failover leaves it behind) with the database, and its replica."""
        primary = await asyncio.to_thread(PgCluster().init)
        self._replicated.append(primary)
        await asyncio.to_thread(primary.start)
        await create_database(primary.dsn(), name)
        await migrate(dsn_for(primary.dsn(), name))
        replica = await asyncio.to_thread(lambda: primary.replica(synchronous=sync))
        return multi_host_dsn([primary, replica], name), primary, replica

    async def _cluster_started(self) -> PgCluster:
        if self._cluster is None:
            self._cluster = await asyncio.to_thread(PgCluster().init)
        if not self._cluster.running:
            await asyncio.to_thread(self._cluster.start)
        return self._cluster

    async def _database(self, drill: Drill, name: str) -> tuple[str, PgCluster | None]:
        if drill.private_pg:
            cluster = await self._cluster_started()
            admin = cluster.dsn()
            await create_database(admin, name)
            await migrate(dsn_for(admin, name))
        else:
            cluster, admin = None, PG_ADMIN
            await create_database(admin, name, self.template)
        self._databases.append((admin, name))
        return dsn_for(admin, name), cluster

    async def drill(self, drill: Drill) -> DrillResult:
        started = time.monotonic()
        slug = drill.slug.replace("-", "_")
        prefix = f"d{self.run_id}-{drill.slug}"
        name = f"sv_drill_{self.run_id}_{slug}"
        cluster: PgCluster | None
        replica: PgCluster | None = None
        if drill.pg_replica is not None:
            sync = drill.pg_replica == "sync"
            dsn, cluster, replica = await self._replicated_database(sync, name)
        else:
            dsn, cluster = await self._database(drill, name)
        rabbit = await self._rabbit_started() if drill.rabbit_cluster else None
        async with FakePortal() as portal:
            stack = DrillStack(
                drill.slug,
                f"svdrill.{self.run_id}.{drill.slug}",
                dsn,
                self.secrets,
                portal,
                self.logdir,
                cluster=cluster,
                replica=replica,
                rabbit=rabbit,
                request_budget=self.plan.request_budget,
            )
            if drill.proxy:
                stack.proxy = await FaultProxy(AMQP_HOST, AMQP_PORT).start()
            try:
                result = await self._under_load(drill, stack, prefix)
            except (RuntimeError, OSError, asyncpg.PostgresError) as exc:
                # One drill that cannot go on (a process that never came up, a stalled load)
                # is a broken row in the table, not the end of the run.
                result = aborted(drill, f"{type(exc).__name__}: {exc}"[:2000], stack.exits)
            finally:
                await stack.close()
        result.seconds = round(time.monotonic() - started, 1)
        return result

    async def _under_load(self, drill: Drill, stack: DrillStack, prefix: str) -> DrillResult:
        plan = self.plan
        await stack.up(drill.workers)
        async with GatewayDriver(stack.url, webhook_secret=self.secrets.webhook_secret) as driver:
            load = BackupLoad(driver, stack.portal, prefix, plan.load)
            self.tokens += load.tokens
            ctx = DrillContext(stack, load, plan)
            load.start()
            try:
                await ctx.more_acks(plan.warmup_acks)
                await drill.inject(ctx)
                recover = await self._recovery(ctx, prefix)
                for step in ctx.afterwards:
                    await step()
                await asyncio.sleep(plan.settle_seconds)
            finally:
                await load.stop()
        await self._drain(ctx, prefix)
        await stack.stop_processes()
        # Acknowledged but not stored may still be durable in a queue: say how many wait there.
        ctx.notes["left_in_queues"] = await stack.queued()
        conn = await asyncpg.connect(stack.database_url)
        try:
            verdict = await check(
                conn,
                self.keyring,
                load.ledger,
                prefix,
                plan.load.share_bytes,
                stack.portal.calls,
                stack.crashes,
            )
        finally:
            await conn.close()
        stats = list(stack.worker_stats())
        ctx.notes["acked_per_worker"] = [s["acked"] for s in stats]
        # The slowest answer of the whole drill, against the processes' REQUEST_BUDGET.
        slowest, _ = load.ledger.slowest(0.0, math.inf)
        ctx.notes["budget_s"] = stack.settings().request_budget
        ctx.notes.setdefault("slowest_answer_s", round(slowest, 2))
        acks = [a for i in load.ledger.identities.values() for a in i.acks]
        return DrillResult(
            drill=drill.slug,
            name=drill.name,
            acknowledged=verdict.acknowledged,
            lost=verdict.lost,
            regressed=verdict.regressed,
            duplicated=verdict.duplicated,
            max_deliveries=max((s["max_deliveries"] for s in stats), default=None),
            recover_s=None if recover is None else round(recover, 1),
            reports_owed=verdict.reports_owed,
            reports_delivered=verdict.reports_delivered,
            unreported=verdict.unreported,
            reported_twice=verdict.reported_twice,
            reported_twice_in_crash_window=verdict.reported_twice_in_crash_window,
            reported_unowed=verdict.reported_unowed,
            wrong=verdict.wrong,
            holds=verdict.holds
            and (recover is not None or ctx.fault_end is None)
            and ctx.notes.get("budget_held", True)
            # A process that ended on its own is a failure even though it was started again.
            and not stack.exits,
            answers=dict(load.ledger.answers),
            committed=sum(1 for a in acks if a.status == "committed"),
            queued=sum(1 for a in acks if a.status == "queued"),
            worker_stats=stats,
            unplanned_exits=stack.exits,
            notes=ctx.notes,
            problems=verdict.problems,
        )

    async def _caught_up(self, ctx: DrillContext, prefix: str, moment: float | None) -> bool:
        """Everything acknowledged (by `moment`) is stored and its reports are settled."""
        try:
            conn = await asyncpg.connect(ctx.stack.database_url, timeout=2)
        except (OSError, asyncpg.PostgresError, TimeoutError):
            return False
        try:
            stored = await stored_shares(
                conn, self.keyring, ctx.load.ledger, prefix, self.plan.load.share_bytes
            )
            wall = ctx.fault_end_wall if moment is not None else time.time()
            return (
                behind(ctx.load.ledger, stored, moment) == 0
                and await pending_reports_before(conn, prefix, wall) == 0
            )
        except (OSError, asyncpg.PostgresError):
            return False
        finally:
            await conn.close()

    async def _recovery(self, ctx: DrillContext, prefix: str) -> float | None:
        """Seconds from the fault's end until a new write commits again and all that was
        acknowledged before the end is stored, its reports to Portal settled."""
        if ctx.fault_end is None:
            return None
        end = ctx.fault_end
        deadline = end + self.plan.recover_timeout
        while time.monotonic() < deadline:
            now = time.monotonic()
            if ctx.load.ledger.committed_sent_after(end) and await self._caught_up(
                ctx, prefix, end
            ):
                return now - end
            await asyncio.sleep(POLL)
        return None

    async def _drain(self, ctx: DrillContext, prefix: str) -> None:
        """Load stopped: wait until every acknowledged write is stored and every report sent."""
        deadline = time.monotonic() + self.plan.drain_timeout
        while time.monotonic() < deadline:
            if await self._caught_up(ctx, prefix, None):
                return
            await asyncio.sleep(POLL)
        ctx.notes["drain"] = f"not caught up after {self.plan.drain_timeout:.0f}s"


def aborted(drill: Drill, why: str, exits: list[str]) -> DrillResult:
    """The row of a drill that could not finish: broken, with the reason."""
    return DrillResult(
        drill=drill.slug,
        name=drill.name,
        acknowledged=0,
        lost=0,
        regressed=0,
        duplicated=0,
        max_deliveries=None,
        recover_s=None,
        reports_owed=0,
        reports_delivered=0,
        unreported=0,
        reported_twice=0,
        reported_twice_in_crash_window=0,
        reported_unowed=0,
        wrong=0,
        holds=False,
        unplanned_exits=exits,
        problems=[f"drill aborted: {why}"],
    )
