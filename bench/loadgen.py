"""The Portal-like async driver: open loop at a set rate or closed loop, read-your-writes checks."""

from __future__ import annotations

import asyncio
import json
import resource
import time
from dataclasses import dataclass, field

import aiohttp

from bench.workload import Request, Workload

MAX_IN_FLIGHT = 512


@dataclass
class LoadResult:
    mode: str
    seconds: float = 0.0
    sent: int = 0
    ok: int = 0
    committed: int = 0
    queued: int = 0
    failed: dict[str, int] = field(default_factory=dict)
    skipped: int = 0  # open loop: the driver could not keep MAX_IN_FLIGHT (the server is too slow)
    latencies_ms: list[float] = field(default_factory=list)
    sent_at: dict[str, float] = field(default_factory=dict)  # fresh client id → wall-clock send
    ryw_checked: int = 0
    ryw_ok: int = 0
    ryw_failed: int = 0
    ryw_failed_why: dict[str, int] = field(default_factory=dict)  # "status 503", "another share"
    ryw_queued: int = 0  # answered "queued": read-your-writes is not promised then
    driver_cpu_s: float = 0.0

    @property
    def accepted_per_s(self) -> float:
        return self.ok / self.seconds if self.seconds else 0.0


class Driver:
    """One session, many connections; `check_every`-th accepted write is read back at once."""

    def __init__(
        self, base_url: str, root: str, secret: str, workload: Workload, check_every: int
    ) -> None:
        self.base_url = base_url
        self.root = root
        self.headers = {"X-Webhook-Secret": secret, "Content-Type": "application/json"}
        self.workload = workload
        self.check_every = check_every
        self.busy: set[str] = set()

    async def _one(
        self, session: aiohttp.ClientSession, result: LoadResult, started: float, req: Request
    ) -> None:
        wall = time.time() - (time.monotonic() - started)
        try:
            async with session.post(
                f"{self.base_url}{self.root}/backup", data=req.body(), headers=self.headers
            ) as resp:
                text = await resp.read()
                status = resp.status
            result.latencies_ms.append((time.monotonic() - started) * 1000)
            if status != 200:
                result.failed[str(status)] = result.failed.get(str(status), 0) + 1
                return
            result.ok += 1
            state = _status_of(text)
            if state == "committed":
                result.committed += 1
            elif state == "queued":
                result.queued += 1
            if req.fresh:
                result.sent_at[req.client_id] = wall
            else:
                # Overwritten: its row's commit time is no longer this request's.
                result.sent_at.pop(req.client_id, None)
            if result.ok % self.check_every == 0:
                await self._read_back(session, result, req, state)
        except (aiohttp.ClientError, TimeoutError) as exc:
            name = type(exc).__name__
            result.failed[name] = result.failed.get(name, 0) + 1
        finally:
            self.busy.discard(req.client_id)

    async def _read_back(
        self, session: aiohttp.ClientSession, result: LoadResult, req: Request, state: str
    ) -> None:
        """What Portal does right after /backup: the share just written must be served back."""
        async with session.post(
            f"{self.base_url}{self.root}/backup/fetch",
            data=json.dumps({"clientId": req.client_id}),
            headers=self.headers,
        ) as resp:
            answer = await resp.json() if resp.status == 200 else {}
        result.ryw_checked += 1
        if answer.get("backupShares") == [req.share]:
            result.ryw_ok += 1
        elif state == "queued":
            result.ryw_queued += 1
        else:
            result.ryw_failed += 1
            why = "another share" if resp.status == 200 else f"status {resp.status}"
            result.ryw_failed_why[why] = result.ryw_failed_why.get(why, 0) + 1

    async def open_loop(self, rate: float, seconds: float) -> LoadResult:
        """Send at `rate` per second whatever the answers do; latency counts from the due time."""
        result = LoadResult("open")
        cpu0 = _cpu()
        tasks: set[asyncio.Task[None]] = set()
        async with _session() as session:
            t0 = time.monotonic()
            total = int(rate * seconds)
            for i in range(total):
                due = t0 + i / rate
                delay = due - time.monotonic()
                if delay > 0:
                    await asyncio.sleep(delay)
                if len(tasks) >= MAX_IN_FLIGHT:
                    result.skipped += 1
                    continue
                req = self.workload.next(self.busy)
                task = asyncio.create_task(self._one(session, result, due, req))
                tasks.add(task)
                task.add_done_callback(tasks.discard)
                result.sent += 1
            if tasks:
                await asyncio.wait(tasks)
            result.seconds = max(seconds, time.monotonic() - t0)
        result.driver_cpu_s = _cpu() - cpu0
        return result

    async def closed_loop(self, concurrency: int, seconds: float) -> LoadResult:
        """`concurrency` clients, each sending its next request when the last one is answered."""
        result = LoadResult("closed")
        cpu0 = _cpu()
        async with _session() as session:
            t0 = time.monotonic()
            deadline = t0 + seconds

            async def client() -> None:
                while time.monotonic() < deadline:
                    result.sent += 1
                    await self._one(
                        session, result, time.monotonic(), self.workload.next(self.busy)
                    )

            await asyncio.gather(*(client() for _ in range(concurrency)))
            result.seconds = time.monotonic() - t0
        result.driver_cpu_s = _cpu() - cpu0
        return result


def _session() -> aiohttp.ClientSession:
    return aiohttp.ClientSession(
        connector=aiohttp.TCPConnector(limit=MAX_IN_FLIGHT),
        timeout=aiohttp.ClientTimeout(total=10),  # Portal gives up after 10 s
    )


def _status_of(text: bytes) -> str:
    try:
        value = json.loads(text).get("status", "")
    except (ValueError, AttributeError):
        return ""
    return str(value)


def _cpu() -> float:
    usage = resource.getrusage(resource.RUSAGE_SELF)
    return usage.ru_utime + usage.ru_stime


def percentiles(values: list[float]) -> dict[str, float]:
    """p50/p95/p99/max of a sample (ms), nearest-rank."""
    if not values:
        return {"p50": 0.0, "p95": 0.0, "p99": 0.0, "max": 0.0, "mean": 0.0}
    ordered = sorted(values)

    def rank(p: float) -> float:
        return round(ordered[min(len(ordered) - 1, int(p / 100 * len(ordered)))], 2)

    return {
        "p50": rank(50),
        "p95": rank(95),
        "p99": rank(99),
        "max": round(ordered[-1], 2),
        "mean": round(sum(ordered) / len(ordered), 2),
    }
