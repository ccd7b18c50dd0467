"""The drill table, the results file, and the leak scan of every process log of the run."""

from __future__ import annotations

import os
import platform
import subprocess
from pathlib import Path
from typing import Any

from tabulate import tabulate

from bench.drills.runner import DrillResult

HEADERS = [
    "drill",
    "acknowledged",
    "lost",
    "regressed",
    "duplicated",
    "max deliveries of one message",
    "seconds to recover",
    "answers by status during the fault",
    "slowest answer, s (budget)",
    "reported to Portal (delivered/owed)",
    "unplanned exits (restarted)",
    "invariants",
]


def _reports(r: DrillResult) -> str:
    text = f"{r.reports_delivered}/{r.reports_owed}"
    if r.unreported:
        text += f", {r.unreported} unreported"
    if r.reported_unowed:
        text += f", {r.reported_unowed} never stored"
    if r.reported_twice:
        text += f", {r.reported_twice} repeated"
        if r.reported_twice_in_crash_window:
            text += f" ({r.reported_twice_in_crash_window} in the crash window)"
    return text


def _during(r: DrillResult) -> str:
    """Answers to requests sent while the fault lasted (cluster drills): '200: 812, 503: 4'."""
    during = r.notes.get("answers_during")
    return ", ".join(f"{s}: {n}" for s, n in during.items()) if during else "-"


def _slowest(r: DrillResult) -> str:
    if "slowest_answer_s" not in r.notes:
        return "-"
    return f"{r.notes['slowest_answer_s']:.1f} ({r.notes.get('budget_s', '-'):g})"


def table(results: list[DrillResult]) -> str:
    rows = [
        [
            r.name,
            r.acknowledged,
            r.lost,
            r.regressed,
            r.duplicated,
            "-" if r.max_deliveries is None else r.max_deliveries,
            "-" if r.recover_s is None else f"{r.recover_s:.1f}",
            _during(r),
            _slowest(r),
            _reports(r),
            len(r.unplanned_exits),
            "hold" if r.holds else "BROKEN",
        ]
        for r in results
    ]
    return tabulate(rows, headers=HEADERS, tablefmt="github", disable_numparse=True)


def leaks(logdir: Path, values: list[str]) -> list[str]:
    """Which log holds which kind of sensitive value (never the value itself)."""
    found = []
    for path in sorted(logdir.glob("*.log")):
        text = path.read_text(errors="replace")
        found += [f"{path.name}: {len(v)}-char value {v[:4]}…" for v in values if v in text]
    return found


def meta(plan: str, stamp: str, seconds: float) -> dict[str, Any]:
    def git(*args: str) -> str:
        done = subprocess.run(["git", *args], capture_output=True, text=True, check=False)
        return done.stdout.strip()

    return {
        "stamp": stamp,
        "plan": plan,
        "seconds": round(seconds, 1),
        "cores": os.cpu_count(),
        "python": platform.python_version(),
        "commit": git("rev-parse", "--short", "HEAD"),
        "tree_dirty": bool(git("status", "--porcelain", "--", "sharevault")),
        "loadavg_end": os.getloadavg(),
    }
