"""A private 3-node RabbitMQ cluster (tests/support/rabbitcluster.py): the node that gateway and
worker are on, which leads the quorum queues, is killed under load; they move to the others and
nothing acknowledged is lost."""

from __future__ import annotations

import asyncio
from collections.abc import Callable, Iterator
from typing import Any

import asyncpg
import pytest

from sharevault.broker import Topology
from sharevault.config import Settings
from sharevault.crypto import Keyring
from sharevault.service.appkeys import BROKER
from tests.support.backupload import BackupLoad, Client, assert_nothing_lost
from tests.support.rabbitcluster import RabbitCluster
from tests.support.waiting import eventually

pytestmark = pytest.mark.cluster


@pytest.fixture(scope="module")
def rabbit() -> Iterator[RabbitCluster]:
    cluster = RabbitCluster()
    try:
        cluster.start()
        yield cluster
    finally:
        cluster.destroy()


async def test_killing_the_leading_node_loses_nothing(
    rabbit: RabbitCluster,
    gateway_factory: Callable[..., Any],
    settings_factory: Callable[..., Settings],
    worker_factory: Callable[..., Any],
    database_url: str,
) -> None:
    first = rabbit.nodes[0]
    settings = settings_factory(amqp_url=rabbit.urls(), amqp_shuffle=False, commit_wait=2.0)
    gateway: Client = await gateway_factory(settings)
    worker = worker_factory(settings)
    body = await (await gateway.get("/readyz")).json()
    assert body["nodes"]["broker"] == first.node, body
    shares = Topology(settings.amqp_prefix).shares
    async with BackupLoad(gateway, "rmq-kill", identities=8) as load:
        await load.until(lambda: load.answers["committed"] >= 20)
        assert await asyncio.to_thread(rabbit.leader, shares) == first, "declared on the first"
        await asyncio.to_thread(rabbit.kill_node, first)
        await eventually(lambda: gateway.app[BROKER].node not in (None, first.node), timeout=60)
        before = load.total_acked
        await load.until(lambda: load.total_acked >= before + 30, timeout=90)
    leader = await asyncio.to_thread(rabbit.leader, shares)
    assert leader is not None and leader != first
    assert not worker.task.done(), "the worker keeps running"
    await assert_nothing_lost(
        lambda: asyncpg.connect(database_url), Keyring(settings.keyring), load, timeout=60
    )
    print(f"\nnode killed: {dict(load.statuses)}; {dict(load.answers)}; leader now {leader.node}")
    await asyncio.to_thread(rabbit.start_node, first)
