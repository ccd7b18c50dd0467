"""Measuring one system: background CPU, a maximum-rate run, an open-loop run, commit times."""

from __future__ import annotations

import asyncio
import time
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, TypeVar

import asyncpg

from bench import sql
from bench.environment import BenchEnv, log
from bench.loadgen import Driver, LoadResult, percentiles
from bench.plan import Plan
from bench.procstat import Probe, delta
from bench.workload import Workload
from bench.wrkdriver import WrkResult, run_wrk

T = TypeVar("T")
SHARED = ("rabbitmq", "postgres", "postgres_own")
P99_BOUND_MS = 100.0  # the latency bound: "sustained" means within it
SETTLE_S = 1.0  # pause before each maximum-rate point (after the warm-up too)
# What the sweep keeps of each point (the chosen one is also the whole of `max`).
SWEEP_FIELDS = (
    "connections",
    "seconds",
    "requests",
    "accepted",
    "accepted_per_s",
    "latency_ms",
    "failed",
    "failures",
    "cpu_s_per_1000_total",
    "cpu_s_per_1000",
    "peak_rss_mb",
    "driver_cpu_s",
)


@dataclass
class Ctx:
    """What every phase needs; `results` is the JSON document being built."""

    plan: Plan
    env: BenchEnv
    probe: Probe
    logdir: Path
    outdir: Path
    stamp: str
    shares: list[str]
    wrk_data: Path | None
    open_rate: float = 0.0
    results: dict[str, Any] = field(default_factory=dict)
    workload_seq: int = 0
    # The workload being driven (bench/workload.py: WORKLOADS), its shares and wrk data.
    mode: str = "fresh"
    env_roles: list[str] = field(default_factory=list)  # the databases of this run
    mode_shares: dict[str, list[str]] = field(default_factory=dict)
    mode_wrk_data: dict[str, Path] = field(default_factory=dict)

    def workload(self) -> Workload:
        self.workload_seq += 1
        # Overwrite-heavy: the same identities for every run of the bench (as wrk's).
        fresh = self.mode != "overwrite"
        return Workload(
            f"{self.env.run_id}s{self.workload_seq}" if fresh else self.env.run_id,
            self.mode_shares.get(self.mode, self.shares),
            seed=self.workload_seq,
            mode=self.mode,
        )


@dataclass
class Window:
    seconds: float
    cpu: dict[str, float]
    peak_rss_mb: dict[str, float]
    t0: float
    t1: float


async def measured(ctx: Ctx, work: Awaitable[T]) -> tuple[T, Window]:
    """Run `work`, returning its value and the CPU and peak RSS of every followed process."""
    before, t0 = ctx.probe.snapshot(), ctx.probe.now()
    value = await work
    after, t1 = ctx.probe.snapshot(), ctx.probe.now()
    rss = {name: round(ctx.probe.peak_rss(name, t0, t1), 1) for name in ctx.probe.groups}
    return value, Window(round(t1 - t0, 3), delta(before, after), rss, t0, t1)


async def background(ctx: Ctx) -> dict[str, float]:
    """CPU per second of the shared services while we send nothing (other users, idle loops)."""
    if ctx.plan.idle_s <= 0:
        return {}
    _, window = await measured(ctx, asyncio.sleep(ctx.plan.idle_s))
    return {k: round(v / window.seconds, 3) for k, v in window.cpu.items()}


def costs(window: Window, components: list[str], shares: int) -> dict[str, Any]:
    """CPU seconds per 1,000 shares for each component and in total."""
    per = {
        c: round(window.cpu.get(c, 0.0) / shares * 1000, 4) if shares else None
        for c in [*components, "postgres_own"]
    }
    total = sum(window.cpu.get(c, 0.0) for c in components)
    return {
        "cpu_s": {c: window.cpu.get(c, 0.0) for c in [*components, "postgres_own"]},
        "cpu_s_per_1000": per,
        "cpu_s_per_1000_total": round(total / shares * 1000, 4) if shares else None,
        "peak_rss_mb": {c: window.peak_rss_mb[c] for c in components if c in window.peak_rss_mb},
    }


async def drive_max(
    ctx: Ctx, base_url: str, seconds: float, connections: int | None = None
) -> dict[str, Any]:
    """A closed-loop run at `connections` (default: the plan's fixed load): wrk with its Lua
    script, or the Python closed loop in smoke runs."""
    connections = connections or ctx.plan.connections
    wrk_data = ctx.mode_wrk_data.get(ctx.mode, ctx.wrk_data)
    if ctx.plan.use_wrk and wrk_data is not None:
        res: WrkResult = await asyncio.to_thread(
            run_wrk,
            base_url + "/webhook/backup",
            wrk_data,
            seconds=seconds,
            connections=connections,
        )
        return {
            "driver": "wrk",
            "connections": connections,
            "seconds": round(res.seconds, 3),
            "requests": res.requests,
            "accepted": res.ok,
            "accepted_per_s": round(res.accepted_per_s, 1),
            "committed": res.committed,
            "queued": res.queued,
            "failed": res.non2xx + res.socket_errors,
            "failures": {"non2xx": res.non2xx, "socket_errors": res.socket_errors},
            "latency_ms": res.latency_ms,
            "driver_cpu_s": round(res.driver_cpu_s, 3),
        }
    driver = Driver(base_url, "/webhook", ctx.env.secret, ctx.workload(), ctx.plan.check_every)
    load = await driver.closed_loop(connections, seconds)
    return {"driver": "python-closed-loop", "connections": connections, **_load(load)}


def _load(load: LoadResult) -> dict[str, Any]:
    return {
        "seconds": round(load.seconds, 3),
        "requests": load.sent,
        "accepted": load.ok,
        "accepted_per_s": round(load.accepted_per_s, 1),
        "committed": load.committed,
        "queued": load.queued,
        "failed": sum(load.failed.values()),
        "failures": load.failed,
        "skipped": load.skipped,
        "latency_ms": percentiles(load.latencies_ms),
        "driver_cpu_s": round(load.driver_cpu_s, 3),
        "read_your_writes": {
            "checked": load.ryw_checked,
            "ok": load.ryw_ok,
            "failed": load.ryw_failed,
            "failed_because": load.ryw_failed_why,
            "queued_not_yet_visible": load.ryw_queued,
        },
    }


async def max_rate(
    ctx: Ctx,
    base_url: str,
    components: list[str],
    idle: dict[str, float] | None = None,
    *,
    settle: Callable[[], Awaitable[None]] | None = None,
) -> dict[str, Any]:
    """The maximum rate: one measured run per point of the plan's sweep, one point chosen by
    `choose`. The chosen point's figures are the result (as a single run's were); every point is
    kept under "sweep". `settle` runs before each point (after the warm-up too), e.g. to wait
    until the queues hold no backlog of the previous point."""
    await drive_max(ctx, base_url, ctx.plan.warmup_s, ctx.plan.sweep[0])
    points = []
    for connections in ctx.plan.sweep:
        if settle is not None:
            await settle()
        await asyncio.sleep(SETTLE_S)
        point = await max_point(ctx, base_url, components, idle, connections)
        lat = point["latency_ms"]
        log(
            f"  {connections} connections: {point['accepted_per_s']:,.0f}/s,"
            f" p99 {lat['p99']:.1f} ms, {point['failed']} failed"
        )
        if point["failed"]:
            # Recorded, never chosen (`choose`): a rate that refuses requests is no maximum.
            log(f"  {connections} connections: failures {point.get('failures')}: not a candidate")
        points.append(point)
    return chosen_max(points)


def chosen_max(points: list[dict[str, Any]]) -> dict[str, Any]:
    """THE maximum of a sweep (`choose`), with every point kept under "sweep"."""
    best, rule = choose(points)
    return {
        **points[best],
        "chosen": {"connections": points[best]["connections"], "rule": rule},
        "sweep": [{k: p[k] for k in SWEEP_FIELDS if k in p} for p in points],
    }


async def max_point(
    ctx: Ctx,
    base_url: str,
    components: list[str],
    idle: dict[str, float] | None,
    connections: int,
) -> dict[str, Any]:
    """One closed-loop run with its CPU and peak RSS per process (net of the idle background)."""
    seconds = ctx.plan.max_s
    result, window = await measured(ctx, drive_max(ctx, base_url, seconds, connections))
    out = {**result, **costs(window, components, result["accepted"])}
    if idle and result["accepted"]:
        # Other users of the shared RabbitMQ and PostgreSQL: subtract their idle-time rate.
        out["cpu_s_per_1000_net_of_background"] = {
            c: round(
                max(0.0, window.cpu.get(c, 0.0) - idle.get(c, 0.0) * window.seconds)
                / result["accepted"]
                * 1000,
                4,
            )
            for c in SHARED
            if c in window.cpu
        }
    return out


def choose(points: list[dict[str, Any]]) -> tuple[int, str]:
    """The index of THE maximum among a sweep's points, and the rule that picked it. The same rule
    for every system: the highest accepted rate among the points within the issue's latency
    bound (p99 <= P99_BOUND_MS); when none is, the point with the lowest p99. A point with failed
    requests is never chosen."""
    clean = [i for i, p in enumerate(points) if not p["failed"]]
    if not clean:
        raise ValueError("no point of the sweep ran without failed requests")
    within = [i for i in clean if points[i]["latency_ms"]["p99"] <= P99_BOUND_MS]
    if within:
        best = max(within, key=lambda i: points[i]["accepted_per_s"])
        return best, f"highest shares/s with p99 <= {P99_BOUND_MS:g} ms"
    best = min(clean, key=lambda i: points[i]["latency_ms"]["p99"])
    return best, f"no point with p99 <= {P99_BOUND_MS:g} ms: the lowest p99"


async def open_loop(
    ctx: Ctx,
    base_url: str,
    components: list[str],
    dsn: str,
    *,
    rate: float | None = None,
    seconds: float | None = None,
) -> dict[str, Any]:
    """Portal-like steady traffic (default: `ctx.open_rate`), read-backs and commit times."""
    rate = rate or ctx.open_rate
    driver = Driver(base_url, "/webhook", ctx.env.secret, ctx.workload(), ctx.plan.check_every)
    load, window = await measured(ctx, driver.open_loop(rate, seconds or ctx.plan.open_s))
    out = {"driver": "python-open-loop", "rate": rate, **_load(load)}
    out.update(costs(window, components, load.ok))
    out["accept_to_commit_ms"] = await commit_times(dsn, load.sent_at)
    return out


async def commit_times(dsn: str, sent_at: dict[str, float], settle: float = 3.0) -> dict[str, Any]:
    """Send → commit per fresh share, from the row's updated_at (its transaction's start)."""
    wanted = list(sent_at)[:20_000]
    conn = await asyncpg.connect(dsn)
    try:
        deadline = time.monotonic() + settle
        while True:
            rows = await conn.fetch(sql.COMMIT_TIMES, wanted)
            if len(rows) >= len(wanted) or time.monotonic() > deadline:
                break
            await asyncio.sleep(0.2)
    finally:
        await conn.close()
    lat = [(r["t"] - sent_at[r["client_id"]]) * 1000 for r in rows]
    return {"sampled": len(wanted), "found": len(rows), **percentiles(lat)}


async def disk_usage(dsn: str) -> dict[str, Any]:
    """Bytes on disk (heap + TOAST + indexes) per live share."""
    conn = await asyncpg.connect(dsn)
    try:
        row = await conn.fetchrow(sql.DISK)
    finally:
        await conn.close()
    assert row is not None
    live = int(row["live"])
    return {
        **{k: int(row[k]) for k in ("total", "heap", "toast", "indexes", "live", "dead")},
        "bytes_per_live_share": round(int(row["total"]) / live) if live else None,
        # The per-table autovacuum settings only matter where the server runs autovacuum at all.
        "server_autovacuum": row["autovacuum"],
    }


def flatness(series: list[tuple[float, float]], skip: float = 0.1) -> dict[str, float] | None:
    """Spread of RSS after the first `skip` of the run, relative to its median; and the same over
    the second half alone (a plateau after warm-up reads near 0 there, a leak does not)."""
    if len(series) < 4:
        return None

    def spread(values: list[float]) -> tuple[float, float, float, float]:
        ordered = sorted(values)
        median = ordered[len(ordered) // 2]
        width = (ordered[-1] - ordered[0]) / median if median else 0.0
        return ordered[0], ordered[-1], median, width

    low, high, median, width = spread([mb for _, mb in series[int(len(series) * skip) :]])
    second_half = spread([mb for _, mb in series[len(series) // 2 :]])[3]
    return {
        "min_mb": round(low, 1),
        "max_mb": round(high, 1),
        "median_mb": round(median, 1),
        "spread": round(width, 3),
        "second_half_spread": round(second_half, 3),
    }
