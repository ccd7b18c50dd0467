"""The drill "database stall" alone (smoke plan, REQUEST_BUDGET 5 s): `shares` locked under load for
longer than the budget; every answer comes inside it and nothing acknowledged is lost."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

from bench.drills.load import SHARE_MARK
from tests.support.leakcheck import sensitive, subprocess_log

pytestmark = pytest.mark.slow

REPO = Path(__file__).resolve().parents[2]


def test_a_database_stall_is_answered_inside_the_budget_and_loses_nothing(
    tmp_path: Path,
) -> None:
    sensitive(SHARE_MARK)
    logs = tmp_path / "logs"
    env = {k: v for k, v in os.environ.items() if not k.startswith("SHAREVAULT_")}
    command = [sys.executable, "-m", "bench.drills", "--only", "database-stall"]
    done = subprocess.run(
        [*command, "--out", str(tmp_path), "--logs", str(logs)],
        cwd=REPO,
        env=env,
        capture_output=True,
        text=True,
        timeout=240,
        check=False,
    )
    for path in sorted(logs.glob("*.log")):
        with subprocess_log(f"drill-{path.stem}") as kept:
            kept.write(path.read_bytes())
    [file] = tmp_path.glob("drills-*-smoke.json")
    [drill] = json.loads(file.read_text())["drills"]
    notes = drill["notes"]
    assert done.returncode == 0 and drill["holds"], (notes, drill["problems"], done.stderr[-2000:])
    assert (drill["lost"], drill["regressed"], drill["duplicated"], drill["wrong"]) == (0, 0, 0, 0)
    assert notes["stall_s"] > notes["budget_s"] == 5.0
    assert notes["budget_held"] and notes["slowest_answer_s"] < notes["budget_s"] + 1.0, notes
    # Writes during the stall were acknowledged (queued: durable), reads gave up with 503.
    assert notes["writes_during_stall"].get("200", 0) > 0, notes
    assert notes["reads_during_stall"].get("503", 0) > 0, notes
    assert drill["queued"] > 0 and drill["recover_s"] is not None
    assert "| PostgreSQL stalled (tables locked) " in done.stdout
