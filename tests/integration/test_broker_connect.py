"""A gateway or worker that starts while the broker drops every connection comes up by itself
once the broker is back (no connection attempt may hang for good)."""

from __future__ import annotations

import asyncio
import time
from collections.abc import Callable

import pytest

from sharevault.broker import BrokerUnavailable, delete_topology
from sharevault.config import Settings
from sharevault.crypto import Identity
from sharevault.wiring import broker_of
from tests.support.environment import AMQP_URL
from tests.support.faultproxy import fault_proxy
from tests.support.sharing import publish_share, seal_message
from tests.support.waiting import eventually


@pytest.mark.parametrize("outage", [3.0])
async def test_broker_connects_after_an_outage_that_began_before_start(
    settings_factory: Callable[..., Settings], outage: float
) -> None:
    async with fault_proxy("127.0.0.1", 5672) as proxy:
        proxy.cut()  # every connection is reset, including the handshake of new ones
        userinfo = AMQP_URL.split("//", 1)[1].split("@", 1)[0]
        settings = settings_factory(amqp_url=proxy.url("amqp", userinfo))
        async with broker_of(settings, name="connect-test") as broker:
            await eventually(lambda: broker.problem is not None, timeout=10)
            assert not broker.ready
            await asyncio.sleep(outage)
            proxy.restore()
            await eventually(lambda: broker.ready, timeout=30)


async def test_a_topology_deleted_under_a_running_broker_link_fails_publishes_and_no_more(
    settings: Settings,
) -> None:
    # A robust channel closed by the broker reopens and re-declares what it declared. A passive
    # declare of the deleted exchange would then fail again, for ever: seen as a gateway whose
    # queues were deleted under it spinning at 40 % CPU and growing to 2.3 GB.
    async with broker_of(settings, name="deleted-test") as broker:
        await broker.wait_ready(10)
        message = seal_message(settings, Identity("custodian", "c", "GDRIVE", ""), b"s", 1)
        await publish_share(broker, message, timeout=5)
        await delete_topology(settings.amqp_url.get_secret_value(), broker.topology)
        with pytest.raises(BrokerUnavailable):
            await publish_share(broker, message, timeout=5)
        assert await broker.admin.queue_counts(broker.topology.shares) is None
        await asyncio.sleep(0.5)  # let the channel reopen
        started = time.process_time()
        await asyncio.sleep(1.0)
        idle_cpu = time.process_time() - started
        assert idle_cpu < 0.2, f"{idle_cpu:.2f} s of CPU in 1 s of doing nothing"


async def test_sampling_a_missing_queue_leaves_no_channel_open(settings: Settings) -> None:
    # The gateway samples queue depths for its gauges; each sample of a missing queue used to
    # leave a channel behind (robust channels reopen after the broker's 404).
    async with broker_of(settings, name="gauge-test") as broker:
        await broker.wait_ready(10)
        assert broker._connection is not None and broker._connection.transport is not None
        channels = broker._connection.transport.connection.channels
        before = len(channels)
        for _ in range(10):
            assert await broker.admin.queue_counts(f"{settings.amqp_prefix}.no-such-queue") is None
        assert await broker.admin.queue_counts(broker.topology.shares) == (0, 0)
        await asyncio.sleep(0.5)  # time for a robust channel to have reopened
        assert len(channels) == before
        assert broker.ready
