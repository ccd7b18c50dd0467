"""Where the CPU goes: py-spy on the gateway and the worker under load, summed per library."""

from __future__ import annotations

import asyncio
import re
import shutil
import subprocess
import sys
from collections import Counter
from pathlib import Path
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from bench.measure import Ctx

RATE = 100  # samples per second: enough for a profile, little overhead on two cores
_LINE = re.compile(r":\d+\)$")
# First match wins; the leaf frame's file says which library a sample's CPU belongs to.
AREAS = [
    # Socket writes on loopback carry the kernel's delivery to the peer: a syscall per frame.
    ("socket writes (send syscalls)", ("_SelectorSocketTransport.write ", "sock_sendall")),
    ("socket reads (recv syscalls)", ("_read_ready",)),
    ("epoll wait/dispatch", ("selectors.py",)),
    ("metrics (prometheus_client)", ("prometheus_client/",)),
    ("logging (access log)", ("aiohttp/web_log.py", "logging/", "pythonjsonlogger/")),
    ("http (aiohttp)", ("aiohttp/",)),
    ("amqp client (aio-pika/aiormq/pamqp)", ("aio_pika/", "aiormq/", "pamqp/")),
    ("postgres client (asyncpg)", ("asyncpg/",)),
    ("validation (pydantic)", ("pydantic/", "pydantic_core/")),
    ("json", ("json/",)),
    ("sealing (crypto.py, cryptography)", ("sharevault/crypto.py", "cryptography/")),
    ("base64", ("base64.py",)),
    ("sharevault code", ("sharevault/",)),
    ("event loop (asyncio)", ("asyncio/",)),
    ("uuid", ("uuid.py",)),
]


def pyspy() -> str | None:
    local = Path(sys.executable).with_name("py-spy")
    return str(local) if local.exists() else shutil.which("py-spy")


def area_of(frame: str) -> str:
    for name, needles in AREAS:
        if any(n in frame for n in needles):
            return name
    return "other"


def summarise(
    raw: Path, requests: int, seconds: float, cpu_us_per_share: float | None = None
) -> dict[str, Any]:
    """Leaf areas and hottest functions from py-spy's collapsed stacks (`a;b;c count`)."""
    by_area: Counter[str] = Counter()
    self_time: Counter[str] = Counter()
    inclusive: Counter[str] = Counter()
    total = 0
    for line in raw.read_text().splitlines():
        stack, _, count_text = line.rpartition(" ")
        if not stack or not count_text.isdigit():
            continue
        count = int(count_text)
        # (--subprocesses roots each stack in a `process <pid>:"<command line>"` frame: not code.)
        frames = [_LINE.sub(")", f) for f in stack.split(";") if not f.startswith("process ")]
        if not frames:
            continue
        total += count
        by_area[area_of(frames[-1])] += count
        self_time[frames[-1]] += count
        for frame in set(frames):
            inclusive[frame] += count
    # py-spy counts a runnable thread as busy even while it waits for a core (two cores, many
    # processes): its shares are right, its seconds too high. Scale shares by /proc's CPU instead.
    sampled_us = 1e6 / RATE / requests if requests else 0.0

    def table(counter: Counter[str], n: int) -> list[dict[str, Any]]:
        rows = []
        for k, v in counter.most_common(n):
            share = v / total
            row: dict[str, Any] = {"what": k, "share": round(share, 3)}
            row["us_per_request_sampled"] = round(v * sampled_us, 1)
            if cpu_us_per_share is not None:
                row["us_per_request"] = round(share * cpu_us_per_share, 1)
            rows.append(row)
        return rows

    return {
        "samples": total,
        "cpu_s_sampled": round(total / RATE, 2),
        "requests": requests,
        "seconds": seconds,
        "areas": table(by_area, 20),
        "self": table(self_time, 15),
        "inclusive_sharevault": table(
            Counter({k: v for k, v in inclusive.items() if "sharevault/" in k}), 15
        ),
    }


async def profile_under_load(
    ctx: Ctx, base_url: str, pids: dict[str, int], cpu_ms_per_share: dict[str, float]
) -> dict[str, Any]:
    """Record each pid (flame graph SVG + collapsed stacks) while wrk drives the gateway."""
    from bench.measure import drive_max

    tool = pyspy()
    if tool is None:
        return {"skipped": "py-spy not installed (pip install -e '.[bench]')"}
    seconds = ctx.plan.profile_s
    procs = []
    for name, pid in pids.items():
        for fmt, suffix in (("flamegraph", "svg"), ("raw", "txt")):
            out = ctx.outdir / f"{ctx.stamp}-profile-{name}.{suffix}"
            argv = [
                tool,
                "record",
                "--pid",
                str(pid),
                "--rate",
                str(RATE),
                "--nonblocking",
                # A gateway of several processes is a supervisor (idle) and its children.
                "--subprocesses",
                "--duration",
                str(round(seconds)),
                "--format",
                fmt,
                "-o",
                str(out),
            ]
            procs.append(
                (
                    name,
                    suffix,
                    out,
                    subprocess.Popen(argv, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL),
                )
            )
    load = await drive_max(ctx, base_url, seconds)
    result: dict[str, Any] = {"load": {k: load[k] for k in ("accepted", "accepted_per_s")}}
    for name, suffix, out, proc in procs:
        await asyncio.to_thread(proc.wait, seconds + 60)
        if suffix == "svg":
            result[f"{name}_flamegraph"] = out.name
        elif proc.returncode == 0 and out.exists():
            cost = cpu_ms_per_share.get(name)
            result[name] = summarise(
                out, load["accepted"], load["seconds"], None if cost is None else cost * 1000
            )
    return result
