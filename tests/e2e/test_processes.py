"""`sharevault serve` as several processes on one port (SHAREVAULT_HTTP_PROCESSES): requests
land on each, /metrics on any of them shows the sum, SIGTERM drains them all, one dying stops
them all."""

from __future__ import annotations

import asyncio
import json
import os
import re
import signal
import sys
from collections.abc import AsyncIterator
from dataclasses import dataclass
from pathlib import Path
from typing import IO

import aiohttp
import pytest
from prometheus_client.multiprocess import MultiProcessCollector

from sharevault.config import Settings
from tests.support.environment import free_port, process_env, secret_headers
from tests.support.leakcheck import subprocess_log
from tests.support.scraping import sample_value
from tests.support.waiting import eventually

pytestmark = pytest.mark.slow

ROUTE = "/webhook/backup"
REQUESTS = 60


def children_of(pid: int) -> list[int]:
    """Live child processes of `pid`, from /proc."""
    found = []
    for entry in Path("/proc").iterdir():
        if entry.name.isdigit():
            try:
                stat = (entry / "stat").read_text()
            except OSError:
                continue
            if int(stat[stat.rindex(")") + 2 :].split()[1]) == pid:
                found.append(int(entry.name))
    return found


def alive(pid: int) -> bool:
    """Running (not gone, not a zombie waiting to be reaped)."""
    try:
        stat = Path(f"/proc/{pid}/stat").read_text()
    except OSError:
        return False
    return stat[stat.rindex(")") + 2] != "Z"


def listeners_on(port: int) -> int:
    """Sockets listening on `port` (TCP over IPv4 and IPv6), from /proc/net: with SO_REUSEPORT
    each gateway process has its own, bound only once its app has started."""
    count = 0
    for table in ("/proc/net/tcp", "/proc/net/tcp6"):
        try:
            lines = Path(table).read_text().splitlines()[1:]
        except OSError:
            continue
        for line in lines:
            fields = line.split()
            if int(fields[1].rsplit(":", 1)[1], 16) == port and fields[3] == "0A":
                count += 1
    return count


def multiproc_dir(pid: int) -> Path:
    """The metrics directory the supervisor handed to its process `pid`."""
    environ = Path(f"/proc/{pid}/environ").read_bytes().split(b"\0")
    value = next(v for v in environ if v.startswith(b"PROMETHEUS_MULTIPROC_DIR="))
    return Path(value.split(b"=", 1)[1].decode())


def requests_counted_by(directory: Path, pid: int) -> float:
    """What one process counted for ROUTE (200), read from its own file of the shared directory."""
    merged = MultiProcessCollector.merge([str(directory / f"counter_{pid}.db")])  # type: ignore[no-untyped-call]
    for metric in merged:
        for sample in metric.samples:
            if sample.name == "sharevault_http_requests_total" and sample.labels == {
                "route": ROUTE,
                "method": "POST",
                "status": "200",
            }:
                return float(sample.value)
    return 0.0


@dataclass
class Gateway:
    proc: asyncio.subprocess.Process
    url: str
    log: IO[bytes]

    def output(self) -> str:
        return Path(self.log.name).read_text(errors="replace")


@pytest.fixture
async def two_process_gateway(settings: Settings) -> AsyncIterator[Gateway]:
    port = free_port()
    env = process_env(
        settings,
        SHAREVAULT_HTTP_PORT=str(port),
        SHAREVAULT_HTTP_PROCESSES="2",
        SHAREVAULT_COMMIT_WAIT="0",
    )
    log = subprocess_log("gateway-processes")
    proc = await asyncio.create_subprocess_exec(
        sys.executable,
        *("-m", "sharevault", "--log-format", "json", "serve", "--access-log"),
        env=env,
        stdout=log,
        stderr=log,
    )
    gateway = Gateway(proc, f"http://127.0.0.1:{port}", log)
    try:
        # Ready once both processes serve: a fresh connection may land on either. Each binds its
        # listener after its start-up, so two listeners on the port mean both can answer (answers
        # to /readyz alone could all come from the first one up).
        await eventually(lambda: len(children_of(proc.pid)) == 2, timeout=30)
        await eventually(lambda: listeners_on(port) == 2, timeout=30)
        async with aiohttp.ClientSession(connector=aiohttp.TCPConnector(force_close=True)) as s:
            for _ in range(300):
                ready = 0
                for _ in range(8):
                    try:
                        async with s.get(f"{gateway.url}/readyz") as resp:
                            ready += resp.status == 200
                    except aiohttp.ClientError:
                        pass
                if ready == 8:
                    break
                assert proc.returncode is None, gateway.output()[-3000:]
                await asyncio.sleep(0.1)
            else:
                pytest.fail(f"gateway processes not ready:\n{gateway.output()[-3000:]}")
        yield gateway
    finally:
        if proc.returncode is None:
            proc.kill()
            await proc.wait()
        for child in children_of(proc.pid):
            os.kill(child, signal.SIGKILL)
        log.close()


async def test_two_processes_share_the_port_sum_their_metrics_and_stop_on_sigterm(
    two_process_gateway: Gateway,
) -> None:
    gateway = two_process_gateway
    children = children_of(gateway.proc.pid)
    assert len(children) == 2
    directory = multiproc_dir(children[0])
    assert multiproc_dir(children[1]) == directory
    # A fresh connection per request: the kernel spreads connections over the two listeners.
    async with aiohttp.ClientSession(connector=aiohttp.TCPConnector(force_close=True)) as s:

        async def one(i: int) -> int:
            body = {"clientId": f"cl-proc-{i}", "share": f"share-{i}"}
            async with s.post(gateway.url + ROUTE, json=body, headers=secret_headers()) as resp:
                return resp.status

        statuses = await asyncio.gather(*(one(i) for i in range(REQUESTS)))
        assert statuses == [200] * REQUESTS
        per_process = [requests_counted_by(directory, pid) for pid in children]
        assert all(n > 0 for n in per_process), f"one process took every request: {per_process}"
        assert sum(per_process) == REQUESTS
        # Whichever process answers the scrape, it shows the sum of both.
        for _ in range(6):
            async with s.get(gateway.url + "/metrics") as resp:
                text = await resp.text()
            counted = sample_value(
                text, "sharevault_http_requests_total", route=ROUTE, method="POST", status="200"
            )
            assert counted == REQUESTS
            # A queue gauge is one value (the most recent sample), not one per process or a sum.
            lines = [x for x in text.splitlines() if x.startswith("sharevault_queue_consumers{")]
            assert len(lines) == len({x.split(" ")[0] for x in lines}) <= 3
            assert all("pid=" not in x for x in lines)

    gateway.proc.send_signal(signal.SIGTERM)
    assert await asyncio.wait_for(gateway.proc.wait(), 60) == 0, gateway.output()[-3000:]
    assert not any(alive(pid) for pid in children)
    assert not directory.exists(), "the supervisor removes the metrics directory"
    output = gateway.output()
    assert "all 2 processes stopped" in output
    # --access-log reached both processes: a line per request, naming its id and the process.
    access = [json.loads(x) for x in output.splitlines() if '"aiohttp.access"' in x]
    posts = [x for x in access if f"POST {ROUTE} " in x["message"]]
    assert len(posts) == REQUESTS
    assert {x["pid"] for x in posts} == set(children)
    assert all(re.fullmatch(r"[0-9a-f]{32}", x["request_id"]) for x in posts)


async def test_a_process_that_dies_stops_the_gateway_with_an_error(
    two_process_gateway: Gateway,
) -> None:
    gateway = two_process_gateway
    victim, survivor = children_of(gateway.proc.pid)
    os.kill(victim, signal.SIGKILL)
    code = await asyncio.wait_for(gateway.proc.wait(), 60)
    assert code == 1
    assert not alive(survivor)
    assert f"gateway process {victim} exited unexpectedly" in gateway.output()


async def test_processes_stop_when_their_supervisor_is_killed(
    two_process_gateway: Gateway,
) -> None:
    gateway = two_process_gateway
    children = children_of(gateway.proc.pid)
    gateway.proc.kill()  # SIGKILL: the supervisor cannot pass anything on
    await gateway.proc.wait()
    await eventually(lambda: not any(alive(pid) for pid in children), timeout=30)
