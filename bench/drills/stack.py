"""The system under drill: its own database and queue prefix, a gateway and workers as real
processes, a fake Portal, and (for broker drills) a fault proxy in front of RabbitMQ."""

from __future__ import annotations

import asyncio
import os
import time
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path

import aiohttp
import asyncpg

from sharevault.broker import Topology, delete_topology
from sharevault.config import Settings, load_settings
from sharevault.wiring import broker_of
from tests.support import FakePortal
from tests.support.environment import free_port
from tests.support.faultproxy import FaultProxy
from tests.support.pgcluster import PgCluster
from tests.support.rabbitcluster import RabbitCluster
from tests.support.subprocesses import SharevaultProcess

PG_ADMIN = os.environ.get("DRILL_PG", "postgresql://postgres@127.0.0.1:5432/postgres")
AMQP_URL = os.environ.get("DRILL_AMQP", "amqp://guest:guest@127.0.0.1:5672/")
AMQP_HOST, AMQP_PORT = "127.0.0.1", 5672
# Fast enough for seconds-long drills; the shapes (backoff, Retry-After, timeouts) are real.
DRILL_SETTINGS: dict[str, str] = {
    "commit_wait": "2.0",
    "portal_timeout": "1.0",
    "outbox_poll_interval": "0.2",
    "outbox_backoff_initial": "0.5",
    "outbox_backoff_max": "4.0",
    "outbox_lease": "2.0",
    "client_auth_ttl": "30",
    # The drills' load rewrites a few hundred identities several times a second each: the
    # per-client write limit (20, then 1/s) would refuse it. Off here, on by default elsewhere.
    "rate_limit_burst": "0",
}
READY_TIMEOUT = 60.0


def dsn_for(admin: str, name: str) -> str:
    return admin.rsplit("/", 1)[0] + "/" + name


@dataclass
class Secrets:
    """What one run's processes share; also what the leak scan looks for."""

    webhook_secret: str
    encryption_keys: str

    def values(self) -> list[str]:
        keys = [part.split(":", 1)[1] for part in self.encryption_keys.split(",")]
        return [self.webhook_secret, *keys]


@dataclass
class DrillStack:
    """Processes and resources of one drill; `close()` removes everything it made."""

    name: str
    prefix: str
    database_url: str
    secrets: Secrets
    portal: FakePortal
    logdir: Path
    proxy: FaultProxy | None = None
    cluster: PgCluster | None = None  # the private PostgreSQL (the primary, when replicated)
    replica: PgCluster | None = None  # its streaming standby, promoted by failover drills
    rabbit: RabbitCluster | None = None  # a private 3-node RabbitMQ cluster instead of AMQP_URL
    request_budget: float | None = None  # REQUEST_BUDGET of the processes (None: the default)
    port: int = field(default_factory=free_port)
    gateway: SharevaultProcess | None = None
    workers: list[SharevaultProcess] = field(default_factory=list)
    gateways: list[SharevaultProcess] = field(default_factory=list)
    crashes: list[float] = field(default_factory=list)  # monotonic times of SIGKILLs and DB stops
    exits: list[str] = field(default_factory=list)  # processes that ended on their own
    _spawned: int = 0
    _supervisor: asyncio.Task[None] | None = None

    @property
    def amqp(self) -> str:
        """The broker URL(s) of the processes: the machine's node, or every cluster node."""
        return AMQP_URL if self.rabbit is None else self.rabbit.urls()

    def values(self) -> dict[str, str]:
        amqp = self.amqp
        if self.proxy is not None:
            amqp = self.proxy.url("amqp", AMQP_URL.split("//", 1)[1].split("@", 1)[0])
        return {
            "database_url": self.database_url,
            "amqp_url": amqp,
            "amqp_prefix": self.prefix,
            "webhook_secret": self.secrets.webhook_secret,
            "encryption_keys": self.secrets.encryption_keys,
            "portal_api_url": self.portal.url,
            "http_port": str(self.port),
            **DRILL_SETTINGS,
            **({} if self.request_budget is None else {"request_budget": str(self.request_budget)}),
        }

    def settings(self) -> Settings:
        """The processes' settings, for the runner's own broker connection."""
        return load_settings(**{**self.values(), "amqp_url": self.amqp})

    def env(self) -> dict[str, str]:
        base = {k: v for k, v in os.environ.items() if not k.startswith("SHAREVAULT_")}
        extra = {f"SHAREVAULT_{k.upper()}": v for k, v in self.values().items()}
        return {**base, **extra}

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    def _spawn(self, command: str, **extra: str) -> SharevaultProcess:
        self._spawned += 1
        path = self.logdir / f"{self.name}-{command}-{self._spawned}.log"
        return SharevaultProcess(command, {**self.env(), **extra}, path).start()

    async def start_gateway(self) -> SharevaultProcess:
        self.gateway = self._spawn("serve")
        self.gateways.append(self.gateway)
        return self.gateway

    async def start_second_gateway(self, port: int) -> SharevaultProcess:
        """Another gateway on its own port (the load stays on the first)."""
        second = self._spawn("serve", SHAREVAULT_HTTP_PORT=str(port))
        self.gateways.append(second)
        return second

    async def start_worker(self) -> SharevaultProcess:
        worker = self._spawn("work")
        self.workers.append(worker)
        return worker

    def live_workers(self) -> list[SharevaultProcess]:
        return [w for w in self.workers if w.running]

    async def worker_consuming(self, worker: SharevaultProcess) -> None:
        if not await worker.wait_for_output("worker consuming", READY_TIMEOUT):
            raise RuntimeError(f"worker did not start consuming:\n{worker.output()[-2000:]}")

    async def gateway_ready(self, timeout: float = READY_TIMEOUT) -> None:
        """Poll /readyz until 200 (broker and database reachable)."""
        deadline = time.monotonic() + timeout
        async with aiohttp.ClientSession(timeout=aiohttp.ClientTimeout(total=2)) as session:
            while time.monotonic() < deadline:
                if self.gateway is None or not self.gateway.running:
                    break
                try:
                    async with session.get(self.url + "/readyz") as resp:
                        if resp.status == 200:
                            return
                except (aiohttp.ClientError, TimeoutError):
                    pass
                await asyncio.sleep(0.1)
        tail = self.gateway.output()[-2000:] if self.gateway else ""
        raise RuntimeError(f"gateway not ready:\n{tail}")

    async def up(self, workers: int) -> None:
        """Gateway and workers started together, each awaited until it serves."""
        await self.start_gateway()
        started = [await self.start_worker() for _ in range(workers)]
        await asyncio.gather(self.gateway_ready(), *(self.worker_consuming(w) for w in started))
        self._supervisor = asyncio.create_task(self._supervise())

    async def _unsupervised(self) -> None:
        if self._supervisor is not None:
            self._supervisor.cancel()
            await asyncio.gather(self._supervisor, return_exceptions=True)
            self._supervisor = None

    async def _supervise(self) -> None:
        """Start again whatever exits on its own, as the deployment does (`restart:
        unless-stopped` in compose.yaml); each such exit is recorded as a finding."""
        handled: set[int] = set()
        while True:
            await asyncio.sleep(0.1)
            for process in [*self.workers, *self.gateways]:
                if id(process) in handled or not process.exited_unasked:
                    continue
                handled.add(id(process))
                self.crashes.append(time.monotonic())
                self.exits.append(
                    f"{process.command} exited with {process.returncode}: {process.last_words()}"
                )
                if process.command == "work":
                    await self.start_worker()
                elif process is self.gateway:
                    await self.start_gateway()
                else:
                    await self.start_second_gateway(int(process.env["SHAREVAULT_HTTP_PORT"]))

    async def kill(self, process: SharevaultProcess, *, crash: bool = False) -> None:
        """SIGKILL; `crash`: remembered as a moment a report to Portal could be cut short."""
        if crash:
            self.crashes.append(time.monotonic())
        await process.kill()

    async def stop_processes(self) -> None:
        """SIGTERM every worker (they log their counters) and the gateway."""
        await self._unsupervised()
        await asyncio.gather(*(w.terminate(30) for w in self.live_workers()))
        if self.gateway is not None:
            await self.gateway.terminate(15)

    async def queued(self) -> dict[str, int]:
        """Messages ready in the live, backlog and dead-letter queues (none once drained)."""
        async with broker_of(self.settings(), name="drill-count", robust=False) as b:
            names = (b.topology.shares, b.topology.backlog, b.topology.dead)
            return {name: await b.admin.queue_depth(name) for name in names}

    def worker_stats(self) -> Iterator[dict[str, int]]:
        for worker in self.workers:
            yield from worker.stats()

    async def close(self) -> None:
        await self._unsupervised()
        for process in [*self.workers, *self.gateways]:
            if process.running:
                await process.kill()
        if self.proxy is not None:
            await self.proxy.close()
        await delete_topology(self.amqp, Topology(self.prefix))


async def create_database(admin_dsn: str, name: str, template: str | None = None) -> None:
    conn = await asyncpg.connect(admin_dsn)
    try:
        clause = f" TEMPLATE {template}" if template else ""
        await conn.execute(f"CREATE DATABASE {name}{clause}")
    finally:
        await conn.close()


async def drop_database(admin_dsn: str, name: str) -> None:
    conn = await asyncpg.connect(admin_dsn)
    try:
        await conn.execute(f"DROP DATABASE IF EXISTS {name} WITH (FORCE)")
    finally:
        await conn.close()
