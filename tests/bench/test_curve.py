"""The curve's ratios and worst points, and the latency budget's join of hop stamps."""

from __future__ import annotations

from pathlib import Path
from typing import Any

from bench.curve import compare, open_targets, worst
from bench.curvereport import render
from bench.hopbudget import HOPS, budget, join


def point(connections: int, rate: float, p50: float, p99: float, cpu: float) -> dict[str, Any]:
    return {
        "connections": connections,
        "accepted_per_s": rate,
        "latency_ms": {"p50": p50, "p99": p99},
        "failed": 0,
        "cpu_s_per_1000_total": cpu,
        "cpu_s_per_1000": {"gateway": cpu / 2, "app": cpu / 2},
    }


def test_the_worst_ratio_is_reported_not_the_best() -> None:
    sv = [
        point(16, 1300, 12, 18, 0.5),
        point(64, 2500, 20, 54, 0.3),
        point(256, 4500, 50, 153, 0.2),
    ]
    naive = [
        point(16, 3800, 4, 8, 0.4),
        point(64, 3300, 18, 63, 0.4),
        point(256, 3000, 80, 373, 0.4),
    ]
    rows = compare(sv, naive)
    assert [r["x_rate"] for r in rows] == [0.342, 0.758, 1.5]
    got = worst(rows)
    assert got["x_rate"] == {"ratio": 0.342, "connections": 16, "holds_everywhere": False}
    assert got["x_p99"]["connections"] == 16 and got["x_p99"]["ratio"] == 2.25
    assert got["x_cpu"]["ratio"] == 1.25 and not got["x_cpu"]["holds_everywhere"]
    res: dict[str, Any] = {
        "curve": {
            "workloads": {
                "overwrite": {
                    "points": rows,
                    "worst": got,
                    "open": {"naive": {"rate": 1900.0}},
                    "open_targets": open_targets(
                        {"latency_ms": {"p50": 6.0, "p99": 30.0}},
                        {"latency_ms": {"p50": 2.0, "p99": 70.0}},
                    ),
                }
            }
        }
    }
    text = "\n".join(render(res))
    assert "Worst ratio: shares/s 0.34x naive at 16 connections" in text
    assert "| p50 <= naive p50 + 3 ms | 6.0 ms against 2.0 ms | **miss** |" in text
    assert "| p99 <= naive p99 | 30.0 ms against 70.0 ms | hold |" in text


def test_hops_split_a_request_and_never_run_backwards(tmp_path: Path) -> None:
    # start, accept, sealed, confirmed, seen, end on the gateway; delivered, began, committed on
    # the worker, which got the message before the gateway saw its confirm.
    (tmp_path / "gateway-1.tsv").write_text("m1\t0.000\t0.001\t0.002\t0.010\t0.030\t0.031\n")
    (tmp_path / "worker-2.tsv").write_text("m1\t0.008\t0.012\t0.025\nother\t0\t0\t0\n")
    requests = join(tmp_path)
    assert len(requests) == 1
    got = budget(requests)
    hops = got["hop_ms"]
    assert list(hops) == [name for name, _ in HOPS]
    assert hops["parse"]["p50"] == 1.0
    assert hops["publish + confirm"]["p50"] == 8.0
    assert hops["delivery"]["p50"] == 0.0
    assert hops["worker queue"]["p50"] == 2.0
    assert hops["batch commit"]["p50"] == 13.0
    assert hops["commit notification"]["p50"] == 5.0
    assert hops["answer"]["p50"] == 1.0
    assert sum(h["p50"] for h in hops.values()) == got["server_ms"]["p50"] == 31.0
