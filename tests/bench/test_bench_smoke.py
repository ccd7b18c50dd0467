"""The benchmark harness still runs end to end (smoke form: seconds, no wrk, no timing asserts)."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest

REPO = Path(__file__).resolve().parents[2]


@pytest.fixture(scope="module")
def smoke_result(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Any]:
    out = tmp_path_factory.mktemp("bench")
    env = {k: v for k, v in os.environ.items() if not k.startswith("SHAREVAULT_")}
    done = subprocess.run(
        [sys.executable, "-m", "bench", "run", "--smoke", "--no-setup", "--out", str(out)],
        cwd=REPO,
        env=env,
        capture_output=True,
        text=True,
        timeout=420,
        check=False,
    )
    assert done.returncode == 0, done.stderr[-3000:]
    files = sorted(out.glob("*-smoke.json"))
    assert len(files) == 1, list(out.iterdir())
    result: dict[str, Any] = json.loads(files[0].read_text())
    result["_stdout"] = done.stdout
    return result


def test_every_system_accepted_shares(smoke_result: dict[str, Any]) -> None:
    systems = smoke_result["systems"]
    assert systems["bare"]["max"]["accepted"] > 0
    assert systems["naive"]["max"]["accepted"] > 0
    assert systems["sharevault"]["max"]["accepted"] > 0
    assert systems["sharevault"]["accept_only"]["max"]["accepted"] > 0
    for name in ("naive", "sharevault"):
        run = systems[name]["open"]
        assert run["accepted"] > 0
        assert run["failed"] == 0
        assert run["accept_to_commit_ms"]["found"] > 0
        # Read-your-writes: every share read back right after a committed answer is served.
        assert run["read_your_writes"]["checked"] > 0
        assert run["read_your_writes"]["failed"] == 0


def test_each_maximum_is_a_chosen_point_of_its_sweep(smoke_result: dict[str, Any]) -> None:
    systems = smoke_result["systems"]
    plan = smoke_result["meta"]["plan_settings"]
    for run, planned in (
        (systems["bare"]["max"], plan["sweep"]),
        (systems["naive"]["max"], plan["curve"]),
        (systems["sharevault"]["max"], plan["curve"]),
        (systems["sharevault"]["accept_only"]["max"], plan["sweep"]),
    ):
        assert [p["connections"] for p in run["sweep"]] == planned
        assert all(p["failed"] == 0 and p["cpu_s_per_1000_total"] for p in run["sweep"])
        chosen = next(p for p in run["sweep"] if p["connections"] == run["chosen"]["connections"])
        assert chosen["accepted_per_s"] == run["accepted_per_s"]
        assert run["chosen"]["rule"]
    assert "Maximum-rate search" in smoke_result["_stdout"]


def test_cpu_is_attributed_to_each_process(smoke_result: dict[str, Any]) -> None:
    sv = smoke_result["systems"]["sharevault"]["max"]
    assert set(sv["cpu_s_per_1000"]) >= {"gateway", "worker", "rabbitmq", "postgres"}
    assert sv["cpu_s"]["gateway"] > 0
    assert sv["peak_rss_mb"]["gateway"] > 0
    assert smoke_result["systems"]["naive"]["max"]["cpu_s"]["postgres"] > 0


def test_backlogs_drained_and_baselines_ran(smoke_result: dict[str, Any]) -> None:
    drain = smoke_result["backlog"]["sharevault"]
    # Broker messages before the drain: the publisher coalesces shares as the gateway does.
    assert 0 < drain["ready_before"] <= drain["messages"]
    assert drain["rate_from_first"] > 0
    assert drain["worker_rss_mb"]
    raw = smoke_result["systems"]["raw"]
    assert raw["publish"]["published"] == raw["drain"]["messages"] > 0
    assert smoke_result["systems"]["raw_upsert"]["rows"] > 0
    disk = smoke_result["disk"]["sv"]
    assert disk["live"] > 0
    assert disk["bytes_per_live_share"] > 0


def test_report_has_targets_capacity_and_table(smoke_result: dict[str, Any]) -> None:
    names = [t["target"] for t in smoke_result["targets"]]
    assert len(names) == 7
    assert any("drain" in n for n in names)
    model = smoke_result["capacity"]["sharevault"]["cores"]
    assert set(model) == {"8", "32", "128"}
    assert model["8"]["bottleneck"] in {"gateway", "worker", "rabbitmq", "postgres"}
    assert "| (b) naive direct write |" in smoke_result["_stdout"]


def test_the_curve_compares_both_designs_on_both_workloads(smoke_result: dict[str, Any]) -> None:
    workloads = smoke_result["curve"]["workloads"]
    assert set(workloads) == {"fresh", "overwrite"}
    planned = smoke_result["meta"]["plan_settings"]["curve"]
    for mode, w in workloads.items():
        assert [r["connections"] for r in w["points"]] == planned, mode
        for row in w["points"]:
            assert row["sharevault"]["shares_per_s"] > 0 and row["naive"]["shares_per_s"] > 0
            assert row["x_rate"] and row["x_p99"] and row["x_cpu"]
            assert row["sharevault"]["cpu_ms_per_share_by_part"]["gateway"] > 0
        assert set(w["worst"]) == {"x_rate", "x_p99", "x_cpu"}
        assert [t["holds"] in (True, False) for t in w["open_targets"]] == [True, True]
        assert w["open"]["sharevault"]["read_your_writes"]["failed"] == 0
    assert "The whole curve, overwrite-heavy" in smoke_result["_stdout"]
    assert "Worst ratio: shares/s" in smoke_result["_stdout"]


def test_the_latency_budget_has_every_hop(smoke_result: dict[str, Any]) -> None:
    budget = smoke_result["hop_budget"]
    assert budget["runs"]
    for run in budget["runs"]:
        assert run["requests"] > 0, run
        assert set(run["hop_ms"]) == set(budget["hops"])
        assert run["hop_ms"]["publish + confirm"]["p50"] > 0
        assert run["hop_ms"]["batch commit"]["p50"] > 0
        assert run["server_ms"]["p50"] > 0
    assert "| commit notification |" in smoke_result["_stdout"]
