"""`sharevault serve` / `work` as real subprocesses for fault runs: signals, logs, stats."""

from __future__ import annotations

import asyncio
import re
import signal
import subprocess
import sys
import time
from pathlib import Path

# The worker's closing log line (`ShareWorker.run`); the only place its counters leave the process.
WORKER_STATS = re.compile(
    r"worker stopped: (?P<acked>\d+) acked, (?P<applied>\d+) applied, (?P<retried>\d+) retried "
    r"later, (?P<dead>\d+) dead-lettered, (?P<redelivered>\d+) redelivered, max deliveries of "
    r"one message (?P<max_deliveries>\d+)"
)


def worker_stats(log_text: str) -> list[dict[str, int]]:
    """The counters of every closing line in a worker log (one per clean stop)."""
    return [
        {k: int(v) for k, v in found.groupdict().items()}
        for found in WORKER_STATS.finditer(log_text)
    ]


class SharevaultProcess:
    """One `python -m sharevault <command>`; stdout and stderr go to `log_path` (appended)."""

    def __init__(self, command: str, env: dict[str, str], log_path: Path) -> None:
        self.command = command
        self.env = env
        self.log_path = log_path
        self.proc: subprocess.Popen[bytes] | None = None
        self.started_at = 0.0
        self.signalled: list[str] = []

    def start(self) -> SharevaultProcess:
        with self.log_path.open("ab") as out:
            self.proc = subprocess.Popen(
                [sys.executable, "-m", "sharevault", self.command],
                env=self.env,
                stdout=out,
                stderr=subprocess.STDOUT,
            )
        self.started_at = time.monotonic()
        return self

    @property
    def running(self) -> bool:
        return self.proc is not None and self.proc.poll() is None

    @property
    def returncode(self) -> int | None:
        return None if self.proc is None else self.proc.poll()

    def output(self) -> str:
        try:
            return self.log_path.read_text(errors="replace")
        except OSError:
            return ""

    def send(self, sig: signal.Signals) -> None:
        if self.proc is not None and self.proc.poll() is None:
            self.signalled.append(sig.name)
            self.proc.send_signal(sig)

    async def wait(self, timeout: float) -> int | None:
        """The exit code, or None if it is still running after `timeout` seconds."""
        if self.proc is None:
            return None
        deadline = time.monotonic() + timeout
        # Polled, not waited in a thread: the caller's event loop keeps serving (proxies, fakes).
        while (code := self.proc.poll()) is None and time.monotonic() < deadline:
            await asyncio.sleep(0.05)
        return code

    async def kill(self) -> None:
        """SIGKILL and reap: a crash, nothing finished."""
        self.send(signal.SIGKILL)
        await self.wait(10)

    async def terminate(self, timeout: float = 30) -> int | None:
        """SIGTERM (finish what is in hand), SIGKILL after `timeout`; the exit code."""
        self.send(signal.SIGTERM)
        code = await self.wait(timeout)
        if code is None:
            await self.kill()
            return None
        return code

    async def wait_for_output(self, text: str, timeout: float) -> bool:
        """True once `text` shows up in the log; False when the process died or time ran out."""
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if text in self.output():
                return True
            if self.proc is not None and self.proc.poll() is not None:
                return text in self.output()
            await asyncio.sleep(0.05)
        return False

    @property
    def exited_unasked(self) -> bool:
        """It ended although nobody signalled it: a crash of its own."""
        return self.returncode is not None and not self.signalled

    def last_words(self) -> str:
        """The last line it wrote (for a crash: the exception)."""
        lines = self.output().strip().splitlines()
        return lines[-1][:300] if lines else ""

    def stats(self) -> list[dict[str, int]]:
        """Closing counters of this process if it is a worker that stopped cleanly."""
        return worker_stats(self.output())
