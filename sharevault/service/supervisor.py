"""Several gateway processes on one port (`SHAREVAULT_HTTP_PROCESSES`): a parent starts them, each
accepting on the port with SO_REUSEPORT (the kernel spreads connections over them), forwards
SIGTERM/SIGINT, and exits once all have drained.

A process that dies unexpectedly is not restarted here: the parent stops the others gracefully and
exits non-zero, so that the service manager (Docker's restart policy, systemd, Kubernetes) restarts
the whole gateway with fresh metrics. Prometheus metrics are shared through prometheus_client's
multiprocess mode, in a directory the parent creates and removes."""

from __future__ import annotations

import asyncio
import contextlib
import ctypes
import logging
import os
import shutil
import signal
import sys
import tempfile
from collections.abc import Sequence

log = logging.getLogger(__name__)

MULTIPROC_ENV = "PROMETHEUS_MULTIPROC_DIR"
_PR_SET_PDEATHSIG = 1
# Exit statuses of a process asked to stop before it had put its own signal handlers in place.
_STOPPED_EARLY = (-signal.SIGTERM, -signal.SIGINT)


def run_processes(count: int, argv: Sequence[str], env: dict[str, str]) -> int:
    """Run `count` copies of `argv` until SIGTERM/SIGINT or until one exits; the exit status."""
    metrics_dir = tempfile.mkdtemp(prefix="sharevault-metrics-")
    try:
        return asyncio.run(_supervise(count, argv, {**env, MULTIPROC_ENV: metrics_dir}))
    finally:
        shutil.rmtree(metrics_dir, ignore_errors=True)


async def _supervise(count: int, argv: Sequence[str], env: dict[str, str]) -> int:
    from prometheus_client.multiprocess import mark_process_dead

    loop = asyncio.get_running_loop()
    stopping = asyncio.Event()
    for sig in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(sig, stopping.set)
    unexpected: list[int] = []

    async def watch(child: asyncio.subprocess.Process) -> int:
        code = await child.wait()
        # Its counters stay in the sum; its gauges leave it.
        mark_process_dead(child.pid, env[MULTIPROC_ENV])  # type: ignore[no-untyped-call]
        if not stopping.is_set():
            log.error(
                "gateway process %d exited unexpectedly (status %d); stopping the others",
                child.pid,
                code,
            )
            unexpected.append(child.pid)
            stopping.set()
        return code

    children: list[asyncio.subprocess.Process] = []
    watchers: list[asyncio.Task[int]] = []
    try:
        for _ in range(count):
            children.append(await asyncio.create_subprocess_exec(*argv, env=env))
        log.info(
            "gateway: %d processes (%s)", count, ", ".join(str(child.pid) for child in children)
        )
        watchers += [asyncio.create_task(watch(child)) for child in children]
        await stopping.wait()
    finally:
        for child in children:
            if child.returncode is None:
                with contextlib.suppress(ProcessLookupError):
                    child.send_signal(signal.SIGTERM)
    codes = await asyncio.gather(*watchers)
    failed = [code for code in codes if code != 0 and code not in _STOPPED_EARLY]
    if unexpected or failed:
        return 1
    log.info("gateway: all %d processes stopped", count)
    return 0


def stop_with_supervisor(supervisor: int) -> None:
    """In a supervised gateway process: get SIGTERM when the supervisor dies (Linux), rather than
    serve on as an orphan nobody stops."""
    if sys.platform.startswith("linux"):
        libc = ctypes.CDLL(None, use_errno=True)
        libc.prctl(_PR_SET_PDEATHSIG, signal.SIGTERM)
    if os.getppid() != supervisor:  # it died before the line above took effect
        raise SystemExit(1)
