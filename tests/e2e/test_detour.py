"""While no worker consumes the live queue, the gateway publishes new shares straight to the
backlog (and the journal): one durable write in the broker instead of two (the live TTL's
dead-lettering). A worker that comes back drains them, and the gateway goes live again."""

from __future__ import annotations

import functools
from collections.abc import Callable

from aiohttp.test_utils import TestClient

from sharevault.broker import Broker
from sharevault.config import Settings
from sharevault.service.appkeys import BROKER, ROUTE
from tests.support.environment import secret_headers
from tests.support.inprocess import GatewayFactory, WorkerHandle
from tests.support.waiting import eventually

# The live TTL is long enough that nothing expires into the backlog while a test runs: a share
# found there was routed there by the gateway.
LIVE_TTL = 60.0
CHECK = 0.05


def backup(n: int) -> dict[str, str]:
    return {
        "clientId": f"detour-client-{n}",
        "backupMethod": "GDRIVE-SECP256K1",
        "backupSharePairId": f"detour-pair-{n}",
        "share": f"detour-share-{n}",
    }


async def post(client: TestClient, n: int) -> None:  # type: ignore[type-arg]
    resp = await client.post("/webhook/backup", json=backup(n), headers=secret_headers())
    assert resp.status == 200, await resp.text()


async def fetched(client: TestClient, n: int) -> bool:  # type: ignore[type-arg]
    resp = await client.post(
        "/webhook/backup/fetch", json={"clientId": f"detour-client-{n}"}, headers=secret_headers()
    )
    return resp.status == 200 and (await resp.json()).get("backupShare") == f"detour-share-{n}"


async def depths(broker: Broker) -> tuple[int, int]:
    topology = broker.topology
    return await broker.admin.queue_depth(topology.shares), await broker.admin.queue_depth(
        topology.backlog
    )


async def test_without_a_worker_shares_go_to_the_backlog_and_are_stored_when_one_comes(
    settings_factory: Callable[..., Settings],
    gateway_factory: GatewayFactory,
    worker_factory: Callable[..., WorkerHandle],
) -> None:
    settings = settings_factory(commit_wait=0, live_ttl=LIVE_TTL, detour_check=CHECK)
    client = await gateway_factory(settings)
    broker: Broker = client.app[BROKER]
    route = client.app[ROUTE]
    await eventually(lambda: route.detoured)
    for n in range(3):
        await post(client, n)
    assert await depths(broker) == (0, 3)

    worker_factory(settings)
    await eventually(lambda: not route.detoured)
    for n in range(3):
        assert await eventually(functools.partial(fetched, client, n))
    assert await depths(broker) == (0, 0)
    # Live again: the next share goes to the live queue and the worker stores it from there.
    await post(client, 3)
    assert await eventually(lambda: fetched(client, 3))


async def test_with_the_detour_off_shares_wait_in_the_live_queue(
    settings_factory: Callable[..., Settings], gateway_factory: GatewayFactory
) -> None:
    settings = settings_factory(commit_wait=0, live_ttl=LIVE_TTL, detour_check=0)
    client = await gateway_factory(settings)
    broker: Broker = client.app[BROKER]
    await post(client, 0)
    assert not client.app[ROUTE].detoured
    assert await depths(broker) == (1, 0)
