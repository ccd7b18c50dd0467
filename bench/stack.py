"""The systems under test as real subprocesses: started, awaited until ready, stopped."""

from __future__ import annotations

import asyncio
import json
import signal
import socket
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

import aiohttp

from bench.environment import REPO


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


class Service:
    """One subprocess; its output goes to a log file that is shown when it fails."""

    def __init__(
        self, name: str, argv: list[str], env: dict[str, str], logdir: Path, port: int = 0
    ) -> None:
        self.name = name
        self.argv = argv
        self.env = env
        self.port = port
        self.log_path = logdir / f"{name}.log"
        self.proc: subprocess.Popen[bytes] | None = None
        # `python -m sharevault` imports the package from here (an A/B of another checkout).
        self.cwd = REPO
        self.started = 0.0

    @property
    def pid(self) -> int:
        assert self.proc is not None, f"{self.name} not started"
        return self.proc.pid

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    def start(self) -> Service:
        with self.log_path.open("ab") as out:
            self.proc = subprocess.Popen(
                self.argv, env=self.env, cwd=self.cwd, stdout=out, stderr=subprocess.STDOUT
            )
        self.started = time.time()
        return self

    def tail(self, lines: int = 15) -> str:
        try:
            return "\n".join(self.log_path.read_text(errors="replace").splitlines()[-lines:])
        except OSError:
            return ""

    def check_alive(self) -> None:
        if self.proc is not None and self.proc.poll() is not None:
            raise RuntimeError(f"{self.name} exited with {self.proc.returncode}:\n{self.tail()}")

    async def wait_ready(self, path: str = "/readyz", timeout: float = 180) -> None:
        """Poll an HTTP readiness path until it answers 200."""
        deadline = time.monotonic() + timeout
        async with aiohttp.ClientSession() as session:
            while True:
                self.check_alive()
                try:
                    async with session.get(self.url + path) as resp:
                        if resp.status == 200:
                            return
                except aiohttp.ClientError:
                    pass
                if time.monotonic() > deadline:
                    raise RuntimeError(f"{self.name} not ready in {timeout}s:\n{self.tail()}")
                await asyncio.sleep(0.2)

    async def stop(self, timeout: float = 30) -> int | None:
        """SIGTERM, then SIGKILL after `timeout`; returns the exit code."""
        if self.proc is None or self.proc.poll() is not None:
            return None if self.proc is None else self.proc.returncode
        self.proc.send_signal(signal.SIGTERM)
        deadline = time.monotonic() + timeout
        while self.proc.poll() is None and time.monotonic() < deadline:
            await asyncio.sleep(0.1)
        if self.proc.poll() is None:
            self.proc.kill()
        return self.proc.wait()

    async def result(self, timeout: float) -> dict[str, Any]:
        """For one-shot programs: wait for exit and parse the JSON line they print last."""
        deadline = time.monotonic() + timeout
        while self.proc is not None and self.proc.poll() is None:
            if time.monotonic() > deadline:
                self.proc.kill()
                raise RuntimeError(f"{self.name} did not finish in {timeout}s")
            await asyncio.sleep(0.1)
        self.check_alive_ok()
        last = self.log_path.read_text(errors="replace").strip().splitlines()[-1]
        value: dict[str, Any] = json.loads(last)
        return value

    def check_alive_ok(self) -> None:
        if self.proc is not None and self.proc.returncode not in (0, None):
            raise RuntimeError(f"{self.name} failed ({self.proc.returncode}):\n{self.tail()}")


def python(*args: str) -> list[str]:
    return [sys.executable, *args]
