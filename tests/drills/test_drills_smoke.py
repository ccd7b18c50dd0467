"""The fault drills in their smoke form (a few seconds each, short outages): after every drill,
every acknowledged share is stored at its newest version, and every stored client share was
reported to Portal once."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest

from bench.drills.drills import DRILLS, SMOKE
from bench.drills.load import SHARE_MARK
from tests.support.leakcheck import sensitive, subprocess_log

pytestmark = pytest.mark.slow

REPO = Path(__file__).resolve().parents[2]
Result = dict[str, Any]


@pytest.fixture(scope="module")
def run(tmp_path_factory: pytest.TempPathFactory) -> Result:
    sensitive(SHARE_MARK)
    out = tmp_path_factory.mktemp("drills")
    logs = out / "logs"
    env = {k: v for k, v in os.environ.items() if not k.startswith("SHAREVAULT_")}
    done = subprocess.run(
        [sys.executable, "-m", "bench.drills", "--smoke", "--out", str(out), "--logs", str(logs)],
        cwd=REPO,
        env=env,
        capture_output=True,
        text=True,
        timeout=300,
        check=False,
    )
    # Every process log of the drills joins the session-wide leak check.
    for path in sorted(logs.glob("*.log")):
        with subprocess_log(f"drill-{path.stem}") as kept:
            kept.write(path.read_bytes())
    with subprocess_log("drill-runner") as kept:
        kept.write((done.stdout + done.stderr).encode())
    files = sorted(out.glob("drills-*-smoke.json"))
    assert len(files) == 1, done.stderr[-3000:]
    result: Result = json.loads(files[0].read_text())
    result["returncode"] = done.returncode
    result["stdout"] = done.stdout
    return result


def drills(run: Result) -> dict[str, Result]:
    return {d["drill"]: d for d in run["drills"]}


def test_every_drill_ran_under_load(run: Result) -> None:
    by_slug = drills(run)
    assert set(by_slug) == {d.slug for d in DRILLS if d.smoke}
    for slug, d in by_slug.items():
        assert d["acknowledged"] >= SMOKE.warmup_acks, slug
        assert d["reports_owed"] > 0, f"{slug}: no client share was stored"


def test_no_acknowledged_share_is_lost_regressed_or_duplicated(run: Result) -> None:
    for slug, d in drills(run).items():
        assert (d["lost"], d["regressed"], d["duplicated"], d["wrong"]) == (0, 0, 0, 0), (
            f"{slug}: {d['problems']}"
        )


def test_every_stored_client_share_is_reported_exactly_once(run: Result) -> None:
    for slug, d in drills(run).items():
        assert (d["unreported"], d["reported_unowed"]) == (0, 0), f"{slug}: {d['problems']}"
        # A repeat is only allowed where a crash cut the answer of Portal from its commit.
        assert d["reported_twice"] == d["reported_twice_in_crash_window"], d["problems"]
        assert d["reports_delivered"] == d["reports_owed"] + d["reported_twice"], slug


def test_every_fault_is_recovered_from(run: Result) -> None:
    for slug, d in drills(run).items():
        if slug != "three-workers":
            assert d["recover_s"] is not None, f"{slug}: not recovered: {d['notes']}"
        assert d["max_deliveries"] is not None, f"{slug}: no worker stopped cleanly"
        # Only the drill's own kills: no process of the stack died (and was restarted) unasked.
        assert d["unplanned_exits"] == [], f"{slug}: {d['unplanned_exits']}"
    assert run["returncode"] == 0
    assert "| worker SIGKILL mid-batch " in run["stdout"]


def test_the_faults_really_happened(run: Result) -> None:
    d = drills(run)
    assert min(d["gateway-sigkill"]["notes"]["requests_in_flight_at_kill"]) > 0
    assert d["broker-unreachable"]["answers"].get("503", 0) > 0
    assert d["postgres-stop"]["queued"] > 0, "the gateway should answer 'queued' while PG is down"
    assert d["portal-5xx"]["notes"]["portal_calls_failed"] > 0
    assert d["portal-429"]["notes"]["portal_calls_failed"] > 0
    assert d["portal-timeout"]["notes"]["portal_calls_undelivered"] > 0
    assert d["duplicate"]["notes"]["duplicates_published"] > 0
    assert d["duplicate"]["max_deliveries"] >= 2
    assert d["rolling-restart"]["notes"]["exit_codes"] == [0] * 2 * SMOKE.rolling_rounds
    per_worker = d["three-workers"]["notes"]["acked_per_worker"]
    assert len(per_worker) == 3
    assert min(per_worker) > 0


def test_no_secret_in_any_process_log(run: Result) -> None:
    assert run["leaks"] == []
