"""The maximum-rate driver: wrk with a Lua script, its own CPU read from wait4's rusage."""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import time
from dataclasses import dataclass
from pathlib import Path

SCRIPT = Path(__file__).with_name("wrk_backup.lua")


@dataclass(frozen=True)
class WrkResult:
    seconds: float
    requests: int
    ok: int
    committed: int
    queued: int
    non2xx: int
    socket_errors: int
    latency_ms: dict[str, float]
    driver_cpu_s: float

    @property
    def accepted_per_s(self) -> float:
        return self.ok / self.seconds if self.seconds else 0.0


def have_wrk() -> bool:
    return shutil.which("wrk") is not None


def run_wrk(
    url: str, data_file: Path, *, seconds: float, connections: int, threads: int = 2
) -> WrkResult:
    """Run wrk to completion (blocking); the caller runs it in a thread."""
    argv = [
        "wrk",
        f"-t{threads}",
        f"-c{connections}",
        f"-d{max(1, round(seconds))}s",
        "--timeout",
        "10s",  # Portal's own limit
        "-s",
        str(SCRIPT),
        url,
    ]
    env = {**os.environ, "BENCH_WRK_DATA": str(data_file)}
    started = time.monotonic()
    proc = subprocess.Popen(argv, env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE)
    # wait4 hands back the child's own rusage: the driver's CPU, not the machine's.
    _, status, usage = os.wait4(proc.pid, 0)
    proc.returncode = os.waitstatus_to_exitcode(status)
    out = proc.stdout.read().decode() if proc.stdout else ""
    err = proc.stderr.read().decode() if proc.stderr else ""
    if proc.returncode != 0 or "BENCH_JSON" not in out:
        raise RuntimeError(f"wrk failed ({proc.returncode}): {err.strip()[:500]}")
    line = next(x for x in out.splitlines() if x.startswith("BENCH_JSON "))
    raw = json.loads(line.removeprefix("BENCH_JSON "))
    duration = raw["duration_us"] / 1e6 or (time.monotonic() - started)
    return WrkResult(
        seconds=duration,
        requests=raw["requests"],
        ok=raw["ok"],
        committed=raw["committed"],
        queued=raw["queued"],
        non2xx=raw["non2xx"],
        socket_errors=raw["connect_errors"]
        + raw["read_errors"]
        + raw["write_errors"]
        + raw["timeouts"],
        latency_ms={
            "p50": raw["p50_us"] / 1000,
            "p95": raw["p95_us"] / 1000,
            "p99": raw["p99_us"] / 1000,
            "max": raw["max_us"] / 1000,
            "mean": raw["mean_us"] / 1000,
        },
        driver_cpu_s=usage.ru_utime + usage.ru_stime,
    )
