"""Fixtures against the real PostgreSQL and RabbitMQ: a template database per run, a fresh
database and uniquely prefixed queues per test."""

from __future__ import annotations

import asyncio
import base64
import json
import os
import socket
import sys
import uuid
from collections.abc import AsyncIterator, Awaitable, Callable, Iterator
from pathlib import Path
from typing import TYPE_CHECKING

import asyncpg
import pytest
from aiohttp import ClientSession
from aiohttp.test_utils import TestClient

from sharevault.broker import Broker, Topology, delete_topology
from sharevault.config import Settings, load_settings
from sharevault.crypto import Identity, Keyring
from sharevault.db import migrate
from sharevault.messages import SHARE_KEY, SINGLE_CONTENT_TYPE, Envelope, ShareMessage
from sharevault.service import create_app
from sharevault.worker import ShareWorker, open_worker
from tests.support import FakePortal

if TYPE_CHECKING:
    from tests.processes import WorkerProcess

pytest_plugins = ["tests.leakcheck"]

PG_ADMIN = os.environ.get("SHAREVAULT_TEST_PG", "postgresql://postgres@127.0.0.1:5432/postgres")
AMQP_URL = os.environ.get("SHAREVAULT_TEST_AMQP", "amqp://guest:guest@127.0.0.1:5672/")
SAMPLES = Path(__file__).parent / "samples"
WEBHOOK_SECRET = "test-webhook-secret-0123456789"
PREVIOUS_SECRET = "test-previous-secret-9876543210"
KEY_A = base64.b64encode(b"A" * 32).decode()
KEY_B = base64.b64encode(b"B" * 32).decode()


@pytest.fixture(scope="session", autouse=True)
def _register_sensitive_values() -> None:
    """What the leak check (tests/leakcheck.py) must never find in any log."""
    from tests.leakcheck import sensitive

    sensitive(WEBHOOK_SECRET, PREVIOUS_SECRET, KEY_A, KEY_B)
    for sample in SAMPLES.glob("*.json"):
        # A run from the middle of every sample share and cipher text.
        for value in json.loads(sample.read_text()).values():
            if isinstance(value, str) and len(value) > 200:
                sensitive(value[100:164])
            elif isinstance(value, dict) and "p" in value:
                sensitive(str(value["p"])[:64])


def dsn_for(name: str) -> str:
    return PG_ADMIN.rsplit("/", 1)[0] + "/" + name


async def _admin(sql: str) -> None:
    conn = await asyncpg.connect(PG_ADMIN)
    try:
        await conn.execute(sql)
    finally:
        await conn.close()


@pytest.fixture(scope="session")
def template_db() -> Iterator[str]:
    """Migrated once per run; every test copies it."""
    name = f"sv_tpl_{os.getpid()}"
    asyncio.run(_admin(f"DROP DATABASE IF EXISTS {name} WITH (FORCE)"))
    asyncio.run(_admin(f"CREATE DATABASE {name}"))
    asyncio.run(migrate(dsn_for(name)))
    yield name
    asyncio.run(_admin(f"DROP DATABASE IF EXISTS {name} WITH (FORCE)"))


@pytest.fixture
def database_url(template_db: str) -> Iterator[str]:
    name = f"sv_t_{uuid.uuid4().hex[:12]}"
    asyncio.run(_admin(f"CREATE DATABASE {name} TEMPLATE {template_db}"))
    yield dsn_for(name)
    asyncio.run(_admin(f"DROP DATABASE IF EXISTS {name} WITH (FORCE)"))


@pytest.fixture
def amqp_prefix() -> Iterator[str]:
    prefix = f"svtest.{uuid.uuid4().hex[:12]}"
    yield prefix
    asyncio.run(delete_topology(AMQP_URL, Topology(prefix)))


@pytest.fixture
def settings_factory(database_url: str, amqp_prefix: str) -> Callable[..., Settings]:
    def make(**overrides: object) -> Settings:
        values: dict[str, object] = {
            "database_url": database_url,
            "amqp_url": AMQP_URL,
            "amqp_shuffle": False,
            "amqp_prefix": amqp_prefix,
            "webhook_secret": WEBHOOK_SECRET,
            "webhook_secret_previous": PREVIOUS_SECRET,
            "encryption_keys": f"ka:{KEY_A},kb:{KEY_B}",
            "portal_api_url": "http://127.0.0.1:9",
            "commit_wait": 5.0,
            "max_body_bytes": 256 * 1024,
        }
        values.update(overrides)
        return load_settings(**values)

    return make


@pytest.fixture
def settings(settings_factory: Callable[..., Settings]) -> Settings:
    return settings_factory()


@pytest.fixture
async def db(database_url: str) -> AsyncIterator[asyncpg.Connection]:
    conn = await asyncpg.connect(database_url)
    yield conn
    await conn.close()


GatewayFactory = Callable[..., Awaitable[TestClient]]  # type: ignore[type-arg]


@pytest.fixture
async def gateway_factory(
    aiohttp_client: Callable[..., Awaitable[TestClient]],  # type: ignore[type-arg]
    settings: Settings,
) -> GatewayFactory:
    async def make(custom: Settings | None = None) -> TestClient:  # type: ignore[type-arg]
        from sharevault.service.appkeys import BROKER

        client = await aiohttp_client(create_app(custom or settings))
        await client.app[BROKER].wait_ready(10)
        return client

    return make


@pytest.fixture
async def gateway(gateway_factory: GatewayFactory) -> TestClient:  # type: ignore[type-arg]
    return await gateway_factory()


class WorkerHandle:
    """An in-process worker task that the test can stop, with its counters in reach."""

    def __init__(self, settings: Settings) -> None:
        self.stop = asyncio.Event()
        self.worker: ShareWorker | None = None
        self.task = asyncio.create_task(self._run(settings))

    async def _run(self, settings: Settings) -> None:
        async with open_worker(settings) as worker:
            self.worker = worker
            await worker.run(self.stop)

    @property
    def acked(self) -> int:
        return self.worker.acked if self.worker else 0

    @property
    def dead_lettered(self) -> int:
        return self.worker.dead_lettered if self.worker else 0

    async def close(self) -> None:
        self.stop.set()
        await asyncio.wait_for(self.task, 30)


@pytest.fixture
async def worker_factory(settings: Settings) -> AsyncIterator[Callable[..., WorkerHandle]]:
    handles: list[WorkerHandle] = []

    def start(custom: Settings | None = None) -> WorkerHandle:
        handle = WorkerHandle(custom or settings)
        handles.append(handle)
        return handle

    yield start
    for handle in handles:
        if not handle.task.done():
            await handle.close()


@pytest.fixture
async def worker(worker_factory: Callable[..., WorkerHandle]) -> WorkerHandle:
    return worker_factory()


def secret_headers(secret: str = WEBHOOK_SECRET) -> dict[str, str]:
    return {"X-Webhook-Secret": secret, "Content-Type": "application/json"}


def seal_message(
    settings: Settings, identity: Identity, share: bytes, version: int
) -> ShareMessage:
    """A queue message exactly as the gateway would publish it."""
    return ShareMessage.build(
        message_id=uuid.uuid4().hex,
        version=version,
        identity=identity,
        sealed=Keyring(settings.keyring).seal(share, identity),
    )


async def publish_junk(broker: Broker, message_id: str = "junk") -> None:
    """A message that is not what its content type says: the worker parks it, replay skips it."""
    junk = Envelope(b"{not json", message_id, {}, SINGLE_CONTENT_TYPE)
    await broker.publisher.publish(junk, routing_key=SHARE_KEY, timeout=5)


async def publish_share(broker: Broker, message: ShareMessage, timeout: float = 5) -> None:
    """Publish one share alone to the live route, with confirm (as an idle gateway would)."""
    await broker.publisher.publish(message.envelope(), routing_key=SHARE_KEY, timeout=timeout)


@pytest.fixture
async def publisher(settings: Settings) -> AsyncIterator[Broker]:
    """A confirming publisher on the test's topology, as a second gateway would be."""
    async with Broker(settings.amqp_url.get_secret_value(), settings.amqp_prefix) as broker:
        await broker.wait_ready(10)
        yield broker


def process_env(settings: Settings, **extra: str) -> dict[str, str]:
    """The environment a `sharevault` subprocess needs to share this test's database and queues."""
    base = {k: v for k, v in os.environ.items() if not k.startswith("SHAREVAULT_")}
    return {
        **base,
        "SHAREVAULT_DATABASE_URL": settings.database_url.get_secret_value(),
        "SHAREVAULT_AMQP_URL": settings.amqp_url.get_secret_value(),
        "SHAREVAULT_AMQP_PREFIX": settings.amqp_prefix,
        "SHAREVAULT_AMQP_SHUFFLE": "true" if settings.amqp_shuffle else "false",
        "SHAREVAULT_WEBHOOK_SECRET": settings.webhook_secret.get_secret_value(),
        "SHAREVAULT_ENCRYPTION_KEYS": settings.encryption_keys.get_secret_value(),
        "SHAREVAULT_PORTAL_API_URL": settings.portal_api_url,
        **extra,
    }


@pytest.fixture
async def fake_portal() -> AsyncIterator[FakePortal]:
    """Portal's API, faked on 127.0.0.1 (tests.support), with clients A and B registered."""
    from tests.leakcheck import sensitive
    from tests.portal_fixtures import PORTAL_API_KEY, SENSITIVE, register_clients

    sensitive(*SENSITIVE)
    async with FakePortal(api_key=PORTAL_API_KEY) as fake:
        register_clients(fake)
        yield fake


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


@pytest.fixture
async def live_gateway(settings: Settings, fake_portal: FakePortal) -> AsyncIterator[str]:
    """`sharevault serve` as a real process on a free port, proving bearers with a fake Portal."""
    from tests.leakcheck import subprocess_log

    port = free_port()
    env = process_env(
        settings,
        SHAREVAULT_HTTP_PORT=str(port),
        SHAREVAULT_COMMIT_WAIT="1",
        SHAREVAULT_PORTAL_API_URL=fake_portal.url,
    )
    log = subprocess_log("gateway")
    proc = await asyncio.create_subprocess_exec(
        sys.executable, "-m", "sharevault", "serve", env=env, stdout=log, stderr=log
    )
    url = f"http://127.0.0.1:{port}"
    try:
        async with ClientSession() as session:
            for _ in range(100):
                try:
                    async with session.get(f"{url}/readyz") as resp:
                        if resp.status == 200:
                            break
                except OSError:
                    pass
                await asyncio.sleep(0.1)
        yield url
    finally:
        proc.terminate()
        assert await proc.wait() == 0, "the gateway should shut down cleanly on SIGTERM"
        log.close()


@pytest.fixture
def workers() -> Iterator[Callable[[dict[str, str]], WorkerProcess]]:
    """`sharevault work` processes started by the test, killed at its end."""
    from tests.processes import WorkerProcess

    started: list[WorkerProcess] = []

    def start(env: dict[str, str]) -> WorkerProcess:
        started.append(WorkerProcess(env))
        return started[-1]

    yield start
    for proc in started:
        proc.kill()
