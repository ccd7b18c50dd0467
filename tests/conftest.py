"""Fixtures against the real PostgreSQL and RabbitMQ: a template database per run, a fresh
database and uniquely prefixed queues per test. The helpers they use live in tests/support."""

from __future__ import annotations

import asyncio
import json
import os
import sys
import uuid
from collections.abc import AsyncIterator, Awaitable, Callable, Iterator

import asyncpg
import pytest
from aiohttp import ClientSession
from aiohttp.test_utils import TestClient

from sharevault.broker import Broker, Topology, delete_topology
from sharevault.config import Settings, load_settings
from sharevault.db import migrate
from sharevault.service import create_app
from sharevault.service.appkeys import BROKER
from tests.support import FakePortal
from tests.support.environment import (
    AMQP_URL,
    KEY_A,
    KEY_B,
    PREVIOUS_SECRET,
    SAMPLES,
    WEBHOOK_SECRET,
    admin_sql,
    dsn_for,
    free_port,
    process_env,
)
from tests.support.inprocess import GatewayFactory, WorkerHandle
from tests.support.leakcheck import (  # the session-wide leak check: hooks of this conftest
    pytest_configure,  # noqa: F401
    pytest_sessionfinish,  # noqa: F401
    sensitive,
    subprocess_log,
)
from tests.support.portal_fixtures import PORTAL_API_KEY, SENSITIVE, register_clients
from tests.support.processes import WorkerProcess


@pytest.fixture(scope="session", autouse=True)
def _register_sensitive_values() -> None:
    """What the leak check (tests/support/leakcheck.py) must never find in any log."""
    sensitive(WEBHOOK_SECRET, PREVIOUS_SECRET, KEY_A, KEY_B)
    for sample in SAMPLES.glob("*.json"):
        # A run from the middle of every sample share and cipher text.
        for value in json.loads(sample.read_text()).values():
            if isinstance(value, str) and len(value) > 200:
                sensitive(value[100:164])
            elif isinstance(value, dict) and "p" in value:
                sensitive(str(value["p"])[:64])


async def _make_template(name: str) -> None:
    await admin_sql(f"DROP DATABASE IF EXISTS {name} WITH (FORCE)")
    await admin_sql(f"CREATE DATABASE {name}")
    await migrate(dsn_for(name))


@pytest.fixture(scope="session")
def template_db() -> Iterator[str]:
    """Migrated once per run; every test copies it. Sync: the session outlives every test's loop."""
    name = f"sv_tpl_{os.getpid()}"
    asyncio.run(_make_template(name))
    yield name
    asyncio.run(admin_sql(f"DROP DATABASE IF EXISTS {name} WITH (FORCE)"))


@pytest.fixture
async def database_url(template_db: str) -> AsyncIterator[str]:
    name = f"sv_t_{uuid.uuid4().hex[:12]}"
    await admin_sql(f"CREATE DATABASE {name} TEMPLATE {template_db}")
    yield dsn_for(name)
    await admin_sql(f"DROP DATABASE IF EXISTS {name} WITH (FORCE)")


@pytest.fixture
async def amqp_prefix() -> AsyncIterator[str]:
    prefix = f"svtest.{uuid.uuid4().hex[:12]}"
    yield prefix
    await delete_topology(AMQP_URL, Topology(prefix))


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


@pytest.fixture
async def gateway_factory(
    aiohttp_client: Callable[..., Awaitable[TestClient]],  # type: ignore[type-arg]
    settings: Settings,
) -> GatewayFactory:
    async def make(custom: Settings | None = None) -> TestClient:  # type: ignore[type-arg]
        client = await aiohttp_client(create_app(custom or settings))
        await client.app[BROKER].wait_ready(10)
        return client

    return make


@pytest.fixture
async def gateway(gateway_factory: GatewayFactory) -> TestClient:  # type: ignore[type-arg]
    return await gateway_factory()


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


@pytest.fixture
async def publisher(settings: Settings) -> AsyncIterator[Broker]:
    """A confirming publisher on the test's topology, as a second gateway would be."""
    async with Broker(settings.amqp_url.get_secret_value(), settings.amqp_prefix) as broker:
        await broker.wait_ready(10)
        yield broker


@pytest.fixture
async def fake_portal() -> AsyncIterator[FakePortal]:
    """Portal's API, faked on 127.0.0.1 (tests.support), with clients A and B registered."""
    sensitive(*SENSITIVE)
    async with FakePortal(api_key=PORTAL_API_KEY) as fake:
        register_clients(fake)
        yield fake


@pytest.fixture
async def live_gateway(settings: Settings, fake_portal: FakePortal) -> AsyncIterator[str]:
    """`sharevault serve` as a real process on a free port, proving bearers with a fake Portal."""
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
    started: list[WorkerProcess] = []

    def start(env: dict[str, str]) -> WorkerProcess:
        started.append(WorkerProcess(env))
        return started[-1]

    yield start
    for proc in started:
        proc.kill()
