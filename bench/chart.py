"""The PNG: throughput, latency, CPU per share by process, and worker RSS while a backlog drains."""

from __future__ import annotations

from pathlib import Path
from typing import Any

from bench.report import rows


def draw(res: dict[str, Any], path: Path) -> bool:
    """Write the chart; False when matplotlib is not installed (smoke runs without the extra)."""
    try:
        import matplotlib

        matplotlib.use("Agg")
        import matplotlib.pyplot as plt
    except ImportError:
        return False
    table = rows(res)
    fig, axes = plt.subplots(2, 2, figsize=(15, 10))
    (ax_rate, ax_lat), (ax_cpu, ax_rss) = axes

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
    ax_lat.axhline(100, color="red", linewidth=0.8, linestyle="--")
    ax_lat.set_title("Latency of /backup (wrk closed loop; open loop at a fixed rate)")
    ax_lat.legend()

    _cpu_stack(ax_cpu, res)
    _rss(ax_rss, res)
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
    ax.legend()
