"""The curve's PNG: per workload (a column each), shares/s, p50 and p99, and CPU per share by
component against connections, sharevault beside the naive direct write."""

from __future__ import annotations

from pathlib import Path
from typing import Any

SV_PARTS = ("gateway", "worker", "rabbitmq", "postgres")
NAIVE_PARTS = ("app", "postgres")


def draw(res: dict[str, Any], path: Path) -> bool:
    """Write the chart; False without matplotlib or without a curve."""
    curve = res.get("curve")
    if not curve:
        return False
    try:
        import matplotlib

        matplotlib.use("Agg")
        import matplotlib.pyplot as plt
    except ImportError:
        return False
    modes = list(curve["workloads"])
    fig, axes = plt.subplots(3, len(modes), figsize=(8 * len(modes), 13), squeeze=False)
    for col, mode in enumerate(modes):
        rows = curve["workloads"][mode]["points"]
        xs = [r["connections"] for r in rows]
        ax_rate, ax_lat, ax_cpu = axes[0][col], axes[1][col], axes[2][col]
        for name, style in (("sharevault", "o-"), ("naive", "s--")):
            ax_rate.plot(xs, [r[name]["shares_per_s"] for r in rows], style, label=name)
            for key, alpha in (("p50", 0.5), ("p99", 1.0)):
                ys = [r[name][key] for r in rows]
                ax_lat.plot(xs, ys, style, alpha=alpha, label=f"{name} {key}")
        for i, r in enumerate(rows):
            ax_rate.annotate(f"{r['x_rate']}x", (xs[i], r["sharevault"]["shares_per_s"]))
        _cpu_bars(ax_cpu, rows)
        ax_rate.set_title(f"{mode}: shares/s (ratio sharevault / naive)")
        ax_lat.set_title(f"{mode}: latency (ms, log)")
        ax_lat.set_yscale("log")
        for ax in (ax_rate, ax_lat):
            ax.set_xscale("log", base=2)
            ax.set_xticks(xs, [str(x) for x in xs])
            ax.set_xticks([], minor=True)
            ax.set_xlabel("closed-loop connections")
            ax.legend(fontsize=8)
    fig.suptitle(f"sharevault bench {res['meta']['stamp']}: the whole curve")
    fig.tight_layout()
    fig.savefig(path, dpi=80)
    plt.close(fig)
    return True


def _cpu_bars(ax: Any, rows: list[dict[str, Any]]) -> None:
    """Stacked CPU ms per share by component: sharevault (left bar) and naive (right bar)."""
    xs = range(len(rows))
    width = 0.38
    for offset, name, parts in (
        (-width / 2, "sharevault", SV_PARTS),
        (width / 2, "naive", NAIVE_PARTS),
    ):
        bottom = [0.0] * len(rows)
        for part in parts:
            values = [(r[name]["cpu_ms_per_share_by_part"] or {}).get(part) or 0.0 for r in rows]
            ax.bar([x + offset for x in xs], values, width, bottom=bottom, label=f"{name} {part}")
            bottom = [b + v for b, v in zip(bottom, values, strict=True)]
    ax.set_xticks(list(xs), [str(r["connections"]) for r in rows])
    ax.set_xlabel("closed-loop connections")
    ax.set_ylabel("CPU ms per share")
    ax.set_title("CPU per share by component (left: sharevault, right: naive)")
    ax.legend(fontsize=7)
