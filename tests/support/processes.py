"""Real `sharevault` processes for the outage tests: workers and one-shot CLI commands."""

from __future__ import annotations

import asyncio
import signal
import subprocess
import sys
from pathlib import Path

from sharevault.config import Settings
from tests.support.environment import process_env
from tests.support.leakcheck import subprocess_log
from tests.support.subprocesses import WORKER_STATS as STATS


def outage_env(settings: Settings, **extra: str) -> dict[str, str]:
    """process_env plus the outage-recovery settings of this test."""
    return process_env(
        settings,
        SHAREVAULT_LIVE_TTL=str(settings.live_ttl),
        SHAREVAULT_BACKLOG_PREFETCH=str(settings.backlog_prefetch),
        SHAREVAULT_DELIVERY_LIMIT=str(settings.delivery_limit),
        SHAREVAULT_RETRY_DELAYS=",".join(str(d) for d in settings.retry_delays),
        SHAREVAULT_RETRY_MAX_ATTEMPTS=str(settings.retry_max_attempts),
        SHAREVAULT_RETRY_HOLD=str(settings.retry_hold),
        SHAREVAULT_JOURNAL_MAX_AGE=settings.journal_max_age,
        SHAREVAULT_JOURNAL_MAX_BYTES=str(settings.journal_max_bytes),
        SHAREVAULT_JOURNAL_SEGMENT_BYTES=str(settings.journal_segment_bytes),
        SHAREVAULT_WORKER_PREFETCH=str(settings.worker_prefetch),
        SHAREVAULT_WORKER_BATCH_SIZE=str(settings.worker_batch_size),
        **extra,
    )


class WorkerProcess:
    """`sharevault work` in a subprocess; its log goes to a file the leak check scans."""

    def __init__(self, env: dict[str, str]) -> None:
        self._log = subprocess_log("worker")
        self.path = Path(self._log.name)
        self.proc = subprocess.Popen(
            [sys.executable, "-m", "sharevault", "work"],
            env=env,
            stdout=self._log,
            stderr=subprocess.STDOUT,
        )

    def output(self) -> str:
        return self.path.read_text(errors="replace")

    async def stop(self, timeout: float = 30) -> dict[str, int]:
        """SIGTERM, wait, and the counters of its closing log line."""
        if self.proc.poll() is None:
            self.proc.send_signal(signal.SIGTERM)
        # Wait without blocking the loop: the fault proxy between worker and broker runs on it.
        code = await asyncio.wait_for(asyncio.to_thread(self.proc.wait), timeout)
        self._log.close()
        assert code == 0, f"worker exited with {code}:\n{self.output()[-3000:]}"
        found = STATS.search(self.output())
        assert found, f"no closing stats line:\n{self.output()[-3000:]}"
        return {k: int(v) for k, v in found.groupdict().items()}

    def kill(self) -> None:
        if self.proc.poll() is None:
            self.proc.kill()
            self.proc.wait(10)
        self._log.close()


async def run_cli(*args: str, env: dict[str, str], stdin: str = "") -> tuple[int, str, str]:
    """One `sharevault …` command; its output is also kept for the leak check."""
    proc = await asyncio.create_subprocess_exec(
        sys.executable,
        "-m",
        "sharevault",
        *args,
        env=env,
        stdin=asyncio.subprocess.PIPE,
        stdout=asyncio.subprocess.PIPE,
        stderr=asyncio.subprocess.PIPE,
    )
    out, err = await asyncio.wait_for(proc.communicate(stdin.encode()), 120)
    with subprocess_log("cli") as kept:
        kept.write(out + b"\n" + err)
    return proc.returncode or 0, out.decode(), err.decode()
