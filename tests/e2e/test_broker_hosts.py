"""Several broker hosts in SHAREVAULT_AMQP_URL: gateway and worker link to the first that answers,
and to another when theirs is lost (issue 16: with a dead broker listed first, a gateway never
became ready)."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

from aiohttp.test_utils import TestClient

from sharevault.config import Settings
from sharevault.service.appkeys import BROKER
from tests.support.environment import AMQP_URL, secret_headers
from tests.support.faultproxy import fault_proxy
from tests.support.inprocess import GatewayFactory, WorkerHandle
from tests.support.waiting import eventually

# Nothing listens there: a connection is refused at once, as by a node that is down.
DEAD_URL = "amqp://guest:guest@127.0.0.1:1/"


def backup(n: int) -> dict[str, str]:
    return {
        "clientId": f"hosts-client-{n}",
        "backupMethod": "GDRIVE-SECP256K1",
        "backupSharePairId": f"hosts-pair-{n}",
        "share": f"hosts-share-{n}",
    }


async def stored(client: TestClient, n: int) -> bool:  # type: ignore[type-arg]
    """Back up share `n` (acknowledged: the broker confirmed it) and wait until it is stored."""
    resp = await client.post("/webhook/backup", json=backup(n), headers=secret_headers())
    assert resp.status == 200, await resp.text()

    async def fetched() -> bool:
        resp = await client.post(
            "/webhook/backup/fetch",
            json={"clientId": f"hosts-client-{n}"},
            headers=secret_headers(),
        )
        return resp.status == 200 and (await resp.json())["backupShare"] == f"hosts-share-{n}"

    return bool(await eventually(fetched))


async def readyz(client: TestClient) -> dict[str, Any]:  # type: ignore[type-arg]
    resp = await client.get("/readyz")
    body: dict[str, Any] = await resp.json()
    return body


def node(url: str) -> str:
    host_port = url.split("@", 1)[1].split("/", 1)[0]
    return host_port if ":" in host_port else f"{host_port}:5672"


async def test_a_dead_broker_listed_first_is_passed_over(
    settings_factory: Callable[..., Settings],
    gateway_factory: GatewayFactory,
    worker_factory: Callable[..., WorkerHandle],
) -> None:
    settings = settings_factory(amqp_url=f"{DEAD_URL},{AMQP_URL}", amqp_shuffle=False)
    client = await gateway_factory(settings)
    worker_factory(settings)
    body = await readyz(client)
    assert body["status"] == "ready", body
    assert body["nodes"]["broker"] == node(AMQP_URL)
    assert await stored(client, 0)


async def test_a_lost_node_is_left_for_the_next_one(
    settings_factory: Callable[..., Settings],
    gateway_factory: GatewayFactory,
    worker_factory: Callable[..., WorkerHandle],
) -> None:
    # The first node is reached through a proxy that then resets every connection and refuses
    # new ones, as a node that dies; gateway and worker move to the second and go on.
    async with fault_proxy("127.0.0.1", node_port(AMQP_URL)) as proxy:
        first = proxy.url("amqp", AMQP_URL.split("//", 1)[1].split("@", 1)[0])
        settings = settings_factory(amqp_url=f"{first},{AMQP_URL}", amqp_shuffle=False)
        client = await gateway_factory(settings)
        worker_factory(settings)
        assert (await readyz(client))["nodes"]["broker"] == node(first)
        assert await stored(client, 1)
        proxy.cut()
        await eventually(lambda: client.app[BROKER].node == node(AMQP_URL), timeout=30)
        assert await stored(client, 2)


def node_port(url: str) -> int:
    return int(node(url).rsplit(":", 1)[1])
