"""Each system of the comparison, started as real processes and measured on the same workload."""

from __future__ import annotations

import asyncio
import time
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from typing import Any

from bench.backlogs import QueueWatch, pending, purge_shares
from bench.environment import log
from bench.measure import Ctx, background, flatness, max_rate, open_loop
from bench.profiling import profile_under_load
from bench.services import baseline_server, gateway, worker
from bench.stack import Service
from sharevault.background import running
from sharevault.db import Store, open_store

# How often the naive design's table is looked at for a vacuum (sharevault's worker looks after
# every 1,000 rows it applies: 0.3-0.5 s at these rates).
NAIVE_VACUUM_LOOK_S = 0.5

NAIVE_PARTS = ["app", "postgres"]
SHAREVAULT_PARTS = ["gateway", "worker", "rabbitmq", "postgres"]
ACCEPT_PARTS = ["gateway", "rabbitmq"]


async def run_bare(ctx: Ctx) -> dict[str, Any]:
    """(a) The HTTP ceiling."""
    app = baseline_server(ctx, "bare").start()
    try:
        await app.wait_ready()
        ctx.probe.follow_pid("app", app.pid)
        log("bare aiohttp: maximum rate")
        out = {"background_cpu_per_s": await background(ctx)}
        out["max"] = await max_rate(ctx, app.url, ["app"], out["background_cpu_per_s"])
        return out
    finally:
        ctx.probe.forget("app")
        await app.stop()


async def run_naive(ctx: Ctx, *, open_only: bool = False) -> dict[str, Any]:
    """(b) Direct upserts, one transaction per request, pool 16: maximum, or the open loop."""
    app = baseline_server(ctx, "naive").start()
    try:
        await app.wait_ready()
        ctx.probe.follow_pid("app", app.pid)
        async with vacuumed(ctx.env.dsn("naive")):
            return await _naive_runs(ctx, app, open_only)
    finally:
        ctx.probe.forget("app")
        await app.stop()


async def _naive_runs(ctx: Ctx, app: Service, open_only: bool) -> dict[str, Any]:
    if open_only:
        log(f"naive direct write: open loop at {ctx.open_rate:.0f}/s")
        return await open_loop(ctx, app.url, NAIVE_PARTS, ctx.env.dsn("naive"))
    log("naive direct write: maximum rate")
    out: dict[str, Any] = {"background_cpu_per_s": await background(ctx)}
    out["max"] = await max_rate(ctx, app.url, NAIVE_PARTS, out["background_cpu_per_s"])
    return out


@asynccontextmanager
async def vacuumed(dsn: str) -> AsyncIterator[None]:
    """The naive design's table vacuumed by the policy sharevault's worker applies to its own
    (`WORKER_VACUUM`: past 1,000 + 20 % dead rows). This server runs with autovacuum off; a
    table left to grow without bound is not what a user would run, and a default server's
    autovacuum would do this work in PostgreSQL for the naive design too. Both designs thus pay
    PostgreSQL's CPU for a bounded table."""
    async with open_store(dsn, size=1) as store, running(_vacuum_when_due(store), "naive-vacuum"):
        yield


async def _vacuum_when_due(store: Store) -> None:
    while True:
        await store.vacuum_if_due()
        await asyncio.sleep(NAIVE_VACUUM_LOOK_S)


def open_rate(ctx: Ctx, naive_max: float) -> float:
    """The open loop's rate: a fraction (half) of the naive design's maximum, capped by what the
    Python driver can send on two shared cores."""
    if ctx.plan.open_fraction <= 0:
        return ctx.plan.open_rate_cap
    return round(min(ctx.plan.open_rate_cap, max(10.0, naive_max * ctx.plan.open_fraction)))


async def run_sharevault(ctx: Ctx, measured: dict[str, Any] | None = None) -> dict[str, Any]:
    """Gateway + worker end to end (read-your-writes on), then the gateway alone (storage down).
    With `measured` (the curve's maximum and open loop), only the profile and the soak run."""
    if measured is not None:
        out = dict(measured)
        if ctx.plan.profile_s > 0 or ctx.plan.soak_s > 0:
            out.update(await _extras(ctx, out["max"]))
        out["accept_only"] = await run_accept_only(ctx)
        return out
    out = {}
    gw = gateway(ctx, "gateway-e2e", commit_wait=5.0).start()
    wk = worker(ctx, "worker-e2e").start()
    try:
        await gw.wait_ready()
        ctx.probe.follow_pid("gateway", gw.pid)
        ctx.probe.follow_pid("worker", wk.pid)
        log("sharevault end to end: maximum rate")
        out["background_cpu_per_s"] = await background(ctx)
        out["max"] = await max_rate(
            ctx,
            gw.url,
            SHAREVAULT_PARTS,
            out["background_cpu_per_s"],
            settle=lambda: drained(ctx),
        )
        ctx.open_rate = open_rate(ctx, ctx.results["systems"]["naive"]["max"]["accepted_per_s"])
        log(f"sharevault end to end: open loop at {ctx.open_rate:.0f}/s")
        out["open"] = await open_loop(ctx, gw.url, SHAREVAULT_PARTS, ctx.env.dsn("sv"))
        if ctx.plan.profile_s > 0:
            log("sharevault end to end: py-spy profile (not a measurement)")
            out["profile"] = await profile_under_load(
                ctx, gw.url, {"gateway": gw.pid, "worker": wk.pid}, out["max"]["cpu_s_per_1000"]
            )
        if ctx.plan.soak_s > 0:
            log(f"sharevault gateway soak: {ctx.plan.soak_s:.0f} s open loop")
            out["soak"] = await soak(ctx, gw)
        wk.check_alive()
        gw.check_alive()
    finally:
        ctx.probe.forget("gateway")
        await gw.stop()
        await drain_and_stop(ctx, wk)
    out["accept_only"] = await run_accept_only(ctx)
    return out


async def _extras(ctx: Ctx, maximum: dict[str, Any]) -> dict[str, Any]:
    """The py-spy profile and the gateway soak, on a gateway and worker of their own."""
    out: dict[str, Any] = {}
    gw = gateway(ctx, "gateway-extras", commit_wait=5.0).start()
    wk = worker(ctx, "worker-extras").start()
    try:
        await gw.wait_ready()
        ctx.probe.follow_pid("gateway", gw.pid)
        ctx.probe.follow_pid("worker", wk.pid)
        if ctx.plan.profile_s > 0:
            log("sharevault end to end: py-spy profile (not a measurement)")
            out["profile"] = await profile_under_load(
                ctx, gw.url, {"gateway": gw.pid, "worker": wk.pid}, maximum["cpu_s_per_1000"]
            )
        if ctx.plan.soak_s > 0:
            log(f"sharevault gateway soak: {ctx.plan.soak_s:.0f} s open loop")
            out["soak"] = await soak(ctx, gw)
        wk.check_alive()
        gw.check_alive()
    finally:
        ctx.probe.forget("gateway")
        await gw.stop()
        await drain_and_stop(ctx, wk)
    return out


async def _wait_drained(ctx: Ctx, timeout: float = 60.0, role: str = "sv") -> int:
    """Shares still waiting in the queues once they are empty or `timeout` has passed."""
    deadline = time.monotonic() + timeout
    prefix = ctx.env.prefix_of(role)
    async with QueueWatch() as watch:
        left = await pending(watch, prefix)
        while left and time.monotonic() < deadline:
            await asyncio.sleep(0.2)
            left = await pending(watch, prefix)
    return left


async def drained(ctx: Ctx, role: str = "sv") -> None:
    """Before each maximum-rate point end to end: the worker has taken everything the previous
    point (or the warm-up) left, so the point does not start on a backlog."""
    left = await _wait_drained(ctx, role=role)
    if left:
        raise RuntimeError(f"{left} messages still queued 60 s after a maximum-rate point")


async def drain_and_stop(ctx: Ctx, wk: Service, role: str = "sv", name: str = "worker") -> None:
    # Stop only once the queue is empty: what the gateway accepted gets stored.
    await _wait_drained(ctx, role=role)
    ctx.probe.forget(name)
    await wk.stop()


async def run_accept_only(ctx: Ctx) -> dict[str, Any]:
    """Storage down: no worker, the gateway answers after the broker's confirm (COMMIT_WAIT=0)."""
    gw = gateway(ctx, "gateway-accept", commit_wait=0.0).start()
    try:
        await gw.wait_ready()
        ctx.probe.follow_pid("gateway", gw.pid)
        log("sharevault, storage down (accept after confirm): maximum rate")
        idle = await background(ctx)
        return {
            "background_cpu_per_s": idle,
            # No worker: each point starts on empty queues instead of the previous points' shares.
            "max": await max_rate(
                ctx, gw.url, ACCEPT_PARTS, idle, settle=lambda: purge_shares(ctx)
            ),
        }
    finally:
        ctx.probe.forget("gateway")
        await gw.stop()
        await purge_shares(ctx)


async def soak(ctx: Ctx, gw: Service) -> dict[str, Any]:
    """Gateway RSS over a long open-loop run: it must stay flat."""
    t0 = ctx.probe.now()
    # Half the open loop's rate: a load it sustains, so RSS shows leaks rather than a queue.
    result = await open_loop(
        ctx,
        gw.url,
        SHAREVAULT_PARTS,
        ctx.env.dsn("sv"),
        rate=max(1.0, ctx.open_rate / 2),
        seconds=ctx.plan.soak_s,
    )
    series = [(t - t0, mb) for t, mb in ctx.probe.series["gateway"] if t >= t0]
    return {"open": result, "gateway_rss_mb": series, "flatness": flatness(series)}
