"""A gateway or worker that starts while the broker drops every connection comes up by itself
once the broker is back (no connection attempt may hang for good)."""

from __future__ import annotations

import asyncio
from collections.abc import Callable

import pytest

from sharevault.broker import Broker
from sharevault.config import Settings
from sharevault.testing.faultproxy import fault_proxy
from tests.conftest import AMQP_URL
from tests.waiting import eventually


@pytest.mark.parametrize("outage", [3.0])
async def test_broker_connects_after_an_outage_that_began_before_start(
    settings_factory: Callable[..., Settings], outage: float
) -> None:
    async with fault_proxy("127.0.0.1", 5672) as proxy:
        proxy.cut()  # every connection is reset, including the handshake of new ones
        userinfo = AMQP_URL.split("//", 1)[1].split("@", 1)[0]
        settings = settings_factory(amqp_url=proxy.url("amqp", userinfo))
        async with Broker.from_settings(settings, name="connect-test") as broker:
            await eventually(lambda: broker.problem is not None, timeout=10)
            assert not broker.ready
            await asyncio.sleep(outage)
            proxy.restore()
            await eventually(lambda: broker.ready, timeout=30)
