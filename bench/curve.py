"""The whole curve: sharevault end to end and the naive direct write, both running, driven in
turn at each connection count of the plan on each workload (the order alternates from point to
point), then the open loop at half the naive maximum; ratios per point and the worst of them."""

from __future__ import annotations

import asyncio
from typing import Any

from bench.environment import log
from bench.measure import SETTLE_S, Ctx, background, chosen_max, drive_max, max_point, open_loop
from bench.services import baseline_server, gateway, worker
from bench.stack import Service
from bench.systems import (
    NAIVE_PARTS,
    SHAREVAULT_PARTS,
    drain_and_stop,
    drained,
    open_rate,
    vacuumed,
)
from bench.workload import WORKLOADS

OPEN_P50_SLACK_MS = 3.0  # the open loop's target: p50 <= naive p50 + this, p99 <= naive p99


# A/B variant (BENCH_AB_*): its processes as the probe names them, and as its points report them.
B_PARTS = ["gateway_b", "worker_b", "rabbitmq", "postgres"]
B_NAMES = {"gateway_b": "gateway", "worker_b": "worker"}
# A system of the curve: its URL, the processes its CPU is counted from, its database role.
Target = tuple[str, list[str], str | None]


async def run_curve(ctx: Ctx) -> dict[str, Any]:
    """Both designs up at once (own databases), measured point by point on every workload; with
    BENCH_AB_* also sharevault B (own database and queues), the A/B variant."""
    app = baseline_server(ctx, "naive").start()
    stacks = [("sv", "", "sharevault")] + ([("svb", "_b", "sharevault_b")] if _ab(ctx) else [])
    services: list[tuple[str, Service, Service]] = []
    for role, suffix, _name in stacks:
        gw = gateway(ctx, f"gateway-curve{suffix}", commit_wait=5.0, role=role).start()
        services.append((role, gw, worker(ctx, f"worker-curve{suffix}", role=role).start()))
    try:
        await app.wait_ready()
        ctx.probe.follow_pid("app", app.pid)
        targets: dict[str, tuple[str, list[str], str | None]] = {
            "naive": (app.url, NAIVE_PARTS, None)
        }
        for (role, suffix, name), (_r, gw, wk) in zip(stacks, services, strict=True):
            await gw.wait_ready()
            ctx.probe.follow_pid(f"gateway{suffix}", gw.pid)
            ctx.probe.follow_pid(f"worker{suffix}", wk.pid)
            targets[name] = (gw.url, B_PARTS if suffix else SHAREVAULT_PARTS, role)
        async with vacuumed(ctx.env.dsn("naive")):
            out: dict[str, Any] = {"background_cpu_per_s": await background(ctx), "workloads": {}}
            for mode in WORKLOADS:
                ctx.mode = mode
                log(f"curve, {mode} workload")
                out["workloads"][mode] = await _workload(ctx, targets, out["background_cpu_per_s"])
        app.check_alive()
        for _role, gw, wk in services:
            gw.check_alive()
            wk.check_alive()
        return out
    finally:
        ctx.mode = "fresh"
        ctx.probe.forget("app")
        await app.stop()
        for (role, suffix, _name), (_r, gw, wk) in zip(stacks, services, strict=True):
            ctx.probe.forget(f"gateway{suffix}")
            await gw.stop()
            await drain_and_stop(ctx, wk, role=role, name=f"worker{suffix}")


def _ab(ctx: Ctx) -> bool:
    return "svb" in ctx.env_roles


async def _workload(ctx: Ctx, targets: dict[str, Target], idle: dict[str, float]) -> dict[str, Any]:
    for url, _parts, _role in targets.values():
        await drive_max(ctx, url, ctx.plan.warmup_s, ctx.plan.curve[0])
    points: dict[str, list[dict[str, Any]]] = {name: [] for name in targets}
    for i, connections in enumerate(ctx.plan.curve):
        order = list(targets) if i % 2 == 0 else list(reversed(targets))
        for name in order:
            url, parts, role = targets[name]
            if role is not None:
                await drained(ctx, role)  # no backlog of the warm-up or of the previous point
            await asyncio.sleep(SETTLE_S)
            point = _renamed(await max_point(ctx, url, parts, idle, connections))
            lat = point["latency_ms"]
            log(
                f"  {name} {connections} connections: {point['accepted_per_s']:,.0f}/s,"
                f" p50 {lat['p50']:.1f} p99 {lat['p99']:.1f} ms,"
                f" CPU {point['cpu_s_per_1000_total']} ms/share, {point['failed']} failed"
            )
            points[name].append(point)
    out: dict[str, Any] = {name: chosen_max(pts) for name, pts in points.items()}
    rate = open_rate(ctx, out["naive"]["accepted_per_s"])
    opened = {}
    for name, (url, parts, role) in targets.items():
        if role is not None:
            await drained(ctx, role)
        log(f"  {name}: open loop at {rate:.0f}/s")
        dsn = ctx.env.dsn(role or "naive")
        opened[name] = _renamed(await open_loop(ctx, url, parts, dsn, rate=rate))
    out["open"] = opened
    out["points"] = compare(points["sharevault"], points["naive"])
    out["worst"] = worst(out["points"])
    out["open_targets"] = open_targets(opened["sharevault"], opened["naive"])
    if "sharevault_b" in points:
        out["b_points"] = compare(points["sharevault_b"], points["naive"])
        out["b_worst"] = worst(out["b_points"])
        out["b_open_targets"] = open_targets(opened["sharevault_b"], opened["naive"])
        out["b_vs_a"] = compare(points["sharevault_b"], points["sharevault"])
    return out


def _renamed(point: dict[str, Any]) -> dict[str, Any]:
    """Variant B's processes under the names sharevault's have (gateway, worker)."""
    for key in ("cpu_s", "cpu_s_per_1000", "peak_rss_mb"):
        if isinstance(point.get(key), dict):
            point[key] = {B_NAMES.get(k, k): v for k, v in point[key].items()}
    return point


def _ratio(a: float | None, b: float | None) -> float | None:
    return round(a / b, 3) if a is not None and b else None


def compare(sv: list[dict[str, Any]], naive: list[dict[str, Any]]) -> list[dict[str, Any]]:
    """One row per connection count: both designs' figures and sharevault's ratios to naive."""
    rows = []
    for s, n in zip(sv, naive, strict=True):
        rows.append(
            {
                "connections": s["connections"],
                "sharevault": _summary(s),
                "naive": _summary(n),
                "x_rate": _ratio(s["accepted_per_s"], n["accepted_per_s"]),
                "x_p50": _ratio(s["latency_ms"]["p50"], n["latency_ms"]["p50"]),
                "x_p99": _ratio(s["latency_ms"]["p99"], n["latency_ms"]["p99"]),
                "x_cpu": _ratio(s.get("cpu_s_per_1000_total"), n.get("cpu_s_per_1000_total")),
            }
        )
    return rows


def _summary(point: dict[str, Any]) -> dict[str, Any]:
    return {
        "shares_per_s": point["accepted_per_s"],
        "p50": point["latency_ms"]["p50"],
        "p99": point["latency_ms"]["p99"],
        "failed": point["failed"],
        "cpu_ms_per_share": point.get("cpu_s_per_1000_total"),
        "cpu_ms_per_share_by_part": point.get("cpu_s_per_1000"),
    }


def worst(rows: list[dict[str, Any]]) -> dict[str, Any]:
    """The worst point of each ratio (lowest shares/s ratio, highest p99 and CPU ratios), and
    whether the goal holds at every point (>= 1.0x naive's rate, <= its p99 and CPU)."""
    out: dict[str, Any] = {}
    for key, higher_is_better in (("x_rate", True), ("x_p99", False), ("x_cpu", False)):
        known = [(float(r[key]), r) for r in rows if r[key] is not None]
        if not known:
            continue
        sign = 1.0 if higher_is_better else -1.0
        value, row = min(known, key=lambda item: sign * item[0])
        out[key] = {
            "ratio": value,
            "connections": row["connections"],
            "holds_everywhere": all(sign * (v - 1.0) >= 0 for v, _ in known),
        }
    return out


def open_targets(sv: dict[str, Any], naive: dict[str, Any]) -> list[dict[str, Any]]:
    """The open loop's targets: p50 <= naive p50 + 3 ms, p99 <= naive p99."""
    s, n = sv["latency_ms"], naive["latency_ms"]
    return [
        {
            "target": f"p50 <= naive p50 + {OPEN_P50_SLACK_MS:g} ms",
            "measured": f"{s['p50']:.1f} ms against {n['p50']:.1f} ms",
            "holds": s["p50"] <= n["p50"] + OPEN_P50_SLACK_MS,
        },
        {
            "target": "p99 <= naive p99",
            "measured": f"{s['p99']:.1f} ms against {n['p99']:.1f} ms",
            "holds": s["p99"] <= n["p99"],
        },
    ]
