"""The PNG: throughput, latency, CPU per share by process, worker RSS while a backlog drains, and
the maximum-rate search (rate and p99 against connections)."""

from __future__ import annotations

from pathlib import Path
from typing import Any

from bench.measure import P99_BOUND_MS
from bench.report import max_runs, rows


def draw(res: dict[str, Any], path: Path) -> bool:
    """Write the chart; False when matplotlib is not installed (smoke runs without the extra)."""
    try:
        import matplotlib

        matplotlib.use("Agg")
        import matplotlib.pyplot as plt
    except ImportError:
        return False
    table = rows(res)
    fig, axes = plt.subplots(2, 3, figsize=(21, 10))
    (ax_rate, ax_lat, ax_sweep_rate), (ax_cpu, ax_rss, ax_sweep_p99) = axes

    labels = [r["system"] for r in table]
    rates = [r["rate"] for r in table]
    ax_rate.barh(
        labels, rates, color=["#888" if r["system"].startswith("(") else "#2a6" for r in table]
    )
    ax_rate.invert_yaxis()
    ax_rate.set_xlabel("shares per second (accepted, stored or drained)")
    ax_rate.set_title("Throughput (2 shared cores)")
    for y, v in enumerate(rates):
        ax_rate.text(v, y, f" {v:,.0f}", va="center", fontsize=8)

    http = [r for r in table if r.get("p50") is not None]
    for label, key in (("(b) naive, open loop", "naive"), ("sharevault, open loop", "sharevault")):
        run = res["systems"].get(key, {}).get("open")
        if run:
            http.append({"system": f"{label} {run['rate']:.0f}/s", **run["latency_ms"]})
    xs = range(len(http))
    width = 0.27
    for i, key in enumerate(("p50", "p95", "p99")):
        ax_lat.bar([x + (i - 1) * width for x in xs], [r[key] for r in http], width, label=key)
    ax_lat.set_xticks(list(xs), [r["system"] for r in http], rotation=20, ha="right", fontsize=8)
    ax_lat.set_yscale("log")
    ax_lat.set_ylabel("ms (log)")
    ax_lat.axhline(P99_BOUND_MS, color="red", linewidth=0.8, linestyle="--")
    ax_lat.set_title("Latency of /backup (closed loop: chosen maximum; open loop: fixed rate)")
    ax_lat.legend()

    _cpu_stack(ax_cpu, res)
    _rss(ax_rss, res)
    _sweep(ax_sweep_rate, ax_sweep_p99, res)
    fig.suptitle(f"sharevault bench {res['meta']['stamp']} ({res['meta']['plan']})")
    fig.tight_layout()
    fig.savefig(path, dpi=90)
    plt.close(fig)
    return True


def _cpu_stack(ax: Any, res: dict[str, Any]) -> None:
    s = res["systems"]
    systems = [
        ("naive", s.get("naive", {}).get("max")),
        ("sharevault e2e", s.get("sharevault", {}).get("max")),
        ("sharevault storage down", s.get("sharevault", {}).get("accept_only", {}).get("max")),
        ("sharevault drain", res.get("backlog", {}).get("sharevault")),
    ]
    present = [(n, m) for n, m in systems if m]
    parts = ["app", "gateway", "worker", "rabbitmq", "postgres"]
    bottom = [0.0] * len(present)
    for part in parts:
        values = [(m.get("cpu_s_per_1000") or {}).get(part) or 0.0 for _, m in present]
        if any(values):
            ax.bar([n for n, _ in present], values, bottom=bottom, label=part)
            bottom = [b + v for b, v in zip(bottom, values, strict=True)]
    ax.tick_params(axis="x", labelsize=8, labelrotation=10)
    ax.set_ylabel("CPU ms per share")
    ax.set_title("CPU per share by process (/proc)")
    ax.legend()


def _rss(ax: Any, res: dict[str, Any]) -> None:
    backlog = res.get("backlog", {})
    for key in ("sharevault", "sharevault_big"):
        drain = backlog.get(key)
        if drain and drain.get("worker_rss_mb"):
            ts, mb = zip(*drain["worker_rss_mb"], strict=True)
            ax.plot(ts, mb, label=f"worker, {drain['messages']:,}-message backlog")
    soak = res["systems"].get("sharevault", {}).get("soak")
    if soak and soak.get("gateway_rss_mb"):
        ts, mb = zip(*soak["gateway_rss_mb"], strict=True)
        ax.plot(ts, mb, label="gateway, soak")
    ax.set_xlabel("seconds")
    ax.set_ylabel("RSS MB")
    ax.set_ylim(bottom=0)
    ax.set_title("Memory while draining")
    if ax.get_legend_handles_labels()[0]:  # nothing drained with --only
        ax.legend()


def _sweep(ax_rate: Any, ax_p99: Any, res: dict[str, Any]) -> None:
    """Every point of each system's maximum-rate search; the chosen one ringed."""
    counts: set[int] = set()
    for label, m in max_runs(res):
        if not m or not m.get("sweep"):
            continue
        xs = [p["connections"] for p in m["sweep"]]
        counts.update(xs)
        for ax, ys, chosen in (
            (ax_rate, [p["accepted_per_s"] for p in m["sweep"]], m["accepted_per_s"]),
            (ax_p99, [p["latency_ms"]["p99"] for p in m["sweep"]], m["latency_ms"]["p99"]),
        ):
            (line,) = ax.plot(xs, ys, "o-", label=label)
            ax.plot(m["connections"], chosen, "o", ms=14, mfc="none", color=line.get_color())
    for ax in (ax_rate, ax_p99):
        ax.set_xscale("log", base=2)
        ax.set_xticks(sorted(counts), [str(n) for n in sorted(counts)])
        ax.set_xticks([], minor=True)
        ax.set_xlabel("closed-loop connections")
        ax.set_yscale("log")
    ax_rate.set_ylabel("shares per second (log)")
    ax_rate.set_title("Maximum-rate search (ringed: the chosen maximum)")
    ax_rate.legend(fontsize=8)
    ax_p99.set_ylabel("p99 ms (log)")
    ax_p99.axhline(P99_BOUND_MS, color="red", linewidth=0.8, linestyle="--")
    ax_p99.set_title(f"p99 at each point (bound {P99_BOUND_MS:g} ms)")
