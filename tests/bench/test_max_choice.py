"""The maximum-rate search picks THE maximum by one rule for every system (bench/measure.py)."""

from __future__ import annotations

from typing import Any

import pytest

from bench.measure import P99_BOUND_MS, choose
from bench.report import render


def point(connections: int, rate: float, p99: float, failed: int = 0) -> dict[str, Any]:
    """A sweep point as `max_rate` records it (rates and latencies are floats there)."""
    return {
        "connections": connections,
        "accepted_per_s": float(rate),
        "latency_ms": {"p50": p99 / 4, "p95": p99 / 2, "p99": float(p99), "max": p99 * 2},
        "failed": failed,
    }


def test_highest_rate_within_the_latency_bound() -> None:
    points = [point(64, 2000, 60), point(128, 2500, 95), point(256, 3500, 160)]
    best, rule = choose(points)
    assert points[best]["connections"] == 128
    assert f"p99 <= {P99_BOUND_MS:g} ms" in rule


def test_more_connections_can_be_slower() -> None:
    best, _ = choose([point(64, 1987, 50), point(128, 1849, 80), point(256, 1766, 99)])
    assert best == 0


def test_lowest_p99_when_no_point_meets_the_bound() -> None:
    points = [point(64, 2598, 157), point(128, 2816, 180), point(256, 3530, 229)]
    best, rule = choose(points)
    assert points[best]["connections"] == 64
    assert "lowest p99" in rule


def test_a_point_with_failed_requests_is_never_chosen() -> None:
    points = [point(64, 1000, 150), point(128, 5000, 20, failed=3)]
    assert choose(points)[0] == 0
    with pytest.raises(ValueError):
        choose([point(64, 1000, 20, failed=1)])


def test_the_sweep_table_marks_the_chosen_point() -> None:
    sweep = [point(64, 2000, 60), point(128, 2500, 95)]
    chosen = {**sweep[1], "chosen": {"connections": 128, "rule": "r"}, "sweep": sweep}
    res: dict[str, Any] = {"systems": {"naive": {"max": {**chosen, "driver": "wrk"}}}}
    table = render(res)
    assert "| system | 64 connections | 128 connections |" in table
    assert "| (b) naive direct write | 2,000/s, p99 60.0 ms | **2,500/s, p99 95.0 ms** |" in table
