"""The latency budget of one request, hop by hop: a gateway and a worker run with
SHAREVAULT_HOP_TRACE (sharevault/hops.py), each writing wall-clock stamps per share; joined by
message id, they split each request's time into its hops. Not a throughput measurement: the
trace costs a little, so this runs apart from the curve."""

from __future__ import annotations

import time
from pathlib import Path
from typing import Any

from bench.environment import log
from bench.loadgen import percentiles
from bench.measure import Ctx, drive_max
from bench.services import gateway, worker
from bench.systems import drain_and_stop, drained

# (name, what it covers); each is the difference of consecutive points of the request's timeline.
HOPS = (
    ("parse", "request in -> body read, authenticated, parsed and validated"),
    ("seal", "-> version, AES-GCM seal, message built"),
    ("publish + confirm", "-> broker confirm of the message carrying it (coalescing included)"),
    ("delivery", "-> in the worker's hands (0 when delivered before the confirm was seen)"),
    ("worker queue", "-> its batch's commit starts (previous batch, decoding)"),
    ("batch commit", "-> the worker's upsert transaction committed"),
    ("commit notification", "-> the gateway's waiter woken (NOTIFY, listener, event loop)"),
    ("answer", "-> response built (JSON, headers, middleware)"),
)


async def run_hop_budget(ctx: Ctx) -> dict[str, Any]:
    """Closed loop at each of the plan's hop_connections on every workload, traced."""
    trace_dir = ctx.logdir / "hops"
    trace_dir.mkdir(exist_ok=True)
    extra = {"SHAREVAULT_HOP_TRACE": str(trace_dir)}
    gw = gateway(ctx, "gateway-hops", commit_wait=5.0)
    wk = worker(ctx, "worker-hops")
    gw.env = {**gw.env, **extra}
    wk.env = {**wk.env, **extra}
    gw.start()
    wk.start()
    windows: list[tuple[str, int, float, float, dict[str, float]]] = []
    try:
        await gw.wait_ready()
        for mode in ("overwrite", "fresh"):
            ctx.mode = mode
            for connections in ctx.plan.hop_connections:
                await drained(ctx)
                log(f"latency budget: {mode} workload, {connections} connections")
                t0 = time.time()
                point = await drive_max(ctx, gw.url, ctx.plan.hop_s, connections)
                windows.append((mode, connections, t0, time.time(), point["latency_ms"]))
        wk.check_alive()
        gw.check_alive()
    finally:
        ctx.mode = "fresh"
        await gw.stop()
        await drain_and_stop(ctx, wk)
    requests = join(trace_dir)
    out: dict[str, Any] = {"hops": [name for name, _ in HOPS], "notes": dict(HOPS), "runs": []}
    for mode, connections, t0, t1, client in windows:
        inside = [r for r in requests if t0 <= r[0] <= t1]
        out["runs"].append(
            {
                "workload": mode,
                "connections": connections,
                "requests": len(inside),
                "client_latency_ms": client,
                **budget(inside),
            }
        )
    return out


def join(trace_dir: Path) -> list[list[float]]:
    """Each traced request's timeline: start, accept, sealed, confirmed, delivered, commit start,
    commit end, seen, end (wall-clock seconds); requests the worker did not trace are left out."""
    worker: dict[str, list[float]] = {}
    for path in trace_dir.glob("worker-*.tsv"):
        for line in path.read_text().splitlines():
            message_id, *stamps = line.split("\t")
            worker[message_id] = [float(s) for s in stamps]
    out = []
    for path in trace_dir.glob("gateway-*.tsv"):
        for line in path.read_text().splitlines():
            message_id, *stamps = line.split("\t")
            got = worker.get(message_id)
            if got is None or len(stamps) != 6:
                continue
            start, accept, sealed, confirmed, seen, end = (float(s) for s in stamps)
            delivered, began, committed = got
            out.append([start, accept, sealed, confirmed, delivered, began, committed, seen, end])
    return out


def budget(requests: list[list[float]]) -> dict[str, Any]:
    """p50/p99 (ms) of each hop and of the whole server-side time."""
    hops: dict[str, list[float]] = {name: [] for name, _ in HOPS}
    total = []
    for start, accept, sealed, confirmed, delivered, began, committed, seen, end in requests:
        # The worker's stamps may precede the gateway's confirm: the timeline never goes back.
        at_worker = max(confirmed, delivered)
        at_commit = max(at_worker, began)
        stored = max(at_commit, committed)
        points = [start, accept, sealed, confirmed, at_worker, at_commit, stored, seen, end]
        for (name, _), a, b in zip(HOPS, points, points[1:], strict=False):
            hops[name].append((b - a) * 1000)
        total.append((end - start) * 1000)
    return {
        "hop_ms": {name: _p(values) for name, values in hops.items()},
        "server_ms": _p(total),
    }


def _p(values: list[float]) -> dict[str, float]:
    got = percentiles(values)
    return {"p50": got["p50"], "p99": got["p99"]}
