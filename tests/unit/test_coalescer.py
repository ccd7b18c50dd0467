"""The coalescer's group commit, against a stand-in for the broker's publish-with-confirm."""

from __future__ import annotations

import asyncio
from collections.abc import Mapping
from typing import Any

import msgpack
import pytest

from sharevault.broker import BrokerUnavailable, Publisher
from sharevault.crypto import Identity
from sharevault.messages import (
    BATCH_CONTENT_TYPE,
    SHARES_HEADER,
    SINGLE_CONTENT_TYPE,
    Envelope,
    ShareMessage,
)
from sharevault.service.publishing import Coalescer, Coalescing, Route


class Broker(Publisher):
    """Records each message; its confirm comes when the test releases it (or fails it)."""

    def __init__(self) -> None:
        self.sent: list[tuple[list[str], Mapping[str, Any] | None, str | None]] = []
        self.keys: list[str] = []
        self.confirms: list[asyncio.Future[None]] = []

    async def publish(
        self,
        envelope: Envelope,
        *,
        routing_key: str,
        timeout: float,
        exchange: str | None = None,
        expiration: float | None = None,
    ) -> None:
        body, content_type = envelope.body, envelope.content_type
        if content_type == BATCH_CONTENT_TYPE:
            ids = [share["message_id"] for share in msgpack.unpackb(body)["shares"]]
        else:
            ids = [msgpack.unpackb(body)["message_id"]]
            assert ids == [envelope.message_id]
        self.sent.append((ids, dict(envelope.headers), content_type))
        self.keys.append(routing_key)
        confirm = asyncio.get_running_loop().create_future()
        self.confirms.append(confirm)
        await confirm


def share(n: int) -> ShareMessage:
    return ShareMessage.build(
        message_id=f"m{n}",
        version=n,
        identity=Identity("custodian", f"c{n}", "GDRIVE", ""),
        sealed=b"sealed",
        context={"x-request-id": f"req{n}"},
    )


async def settle() -> None:
    for _ in range(5):
        await asyncio.sleep(0)


class Detour(Route):
    """A route the test sets by hand."""

    def __init__(self) -> None:
        self.detoured = False


def coalescer_of(broker: Broker, options: Coalescing, route: Route | None = None) -> Coalescer:
    return Coalescer(broker, route or Detour(), options)


async def one_sent_two_waiting(
    coalescer: Coalescer,
) -> tuple[asyncio.Task[None], list[asyncio.Task[None]]]:
    """Share 1 goes alone and awaits its confirm; shares 2 and 3 wait behind it."""
    first = asyncio.create_task(coalescer.publish(share(1), timeout=1))
    await settle()
    waiting = [asyncio.create_task(coalescer.publish(share(n), timeout=1)) for n in (2, 3)]
    await settle()
    return first, waiting


async def test_shares_wait_for_the_confirm_in_flight_then_go_together() -> None:
    broker = Broker()
    coalescer = coalescer_of(broker, Coalescing(in_flight=1, max_shares=3))
    first = asyncio.create_task(coalescer.publish(share(1), timeout=1))
    await settle()
    # Idle: the first share goes at once, alone, as a plain message with its own headers.
    assert broker.sent == [(["m1"], {"x-request-id": "req1"}, SINGLE_CONTENT_TYPE)]
    waiting = [asyncio.create_task(coalescer.publish(share(n), timeout=1)) for n in (2, 3)]
    await settle()
    assert len(broker.sent) == 1 and not first.done()  # waiting for the confirm in flight
    broker.confirms[0].set_result(None)
    await settle()
    assert first.done() and first.exception() is None
    assert broker.sent[1] == (["m2", "m3"], {SHARES_HEADER: 2}, BATCH_CONTENT_TYPE)
    assert not any(t.done() for t in waiting)  # each waits for its own message's confirm
    # A full batch goes even while another is in flight.
    more = [asyncio.create_task(coalescer.publish(share(n), timeout=1)) for n in (4, 5, 6)]
    await settle()
    assert broker.sent[2][0] == ["m4", "m5", "m6"]
    broker.confirms[1].set_result(None)
    broker.confirms[2].set_result(None)
    await asyncio.gather(*waiting, *more)


async def test_a_failed_confirm_fails_every_share_of_its_batch_only() -> None:
    broker = Broker()
    coalescer = coalescer_of(broker, Coalescing(in_flight=1, max_shares=10))
    first, batch = await one_sent_two_waiting(coalescer)
    broker.confirms[0].set_result(None)
    await settle()
    broker.confirms[1].set_exception(ConnectionError("broker gone"))
    await first
    for task in batch:
        with pytest.raises(ConnectionError):
            await task


async def test_an_idle_gateway_sends_at_once_and_lingers_only_beside_a_message_in_flight() -> None:
    broker = Broker()
    coalescer = coalescer_of(broker, Coalescing(linger=60, in_flight=2, max_shares=10))
    first, waiting = await one_sent_two_waiting(coalescer)
    # Nothing was in flight: share 1 went at once, whatever the linger.
    assert [ids for ids, _, _ in broker.sent] == [["m1"]]
    # A confirm slot is free, yet a message is on its way: 2 and 3 linger for company.
    assert not any(t.done() for t in waiting)
    broker.confirms[0].set_result(None)
    await first
    # The one in flight confirmed: none is on its way any more, the lingering ones go now.
    await settle()
    assert [ids for ids, _, _ in broker.sent] == [["m1"], ["m2", "m3"]]
    broker.confirms[1].set_result(None)
    await asyncio.gather(*waiting)


async def test_closing_sends_what_waits_and_a_cancelled_send_answers_every_share() -> None:
    broker = Broker()
    coalescer = coalescer_of(broker, Coalescing(linger=60, max_shares=10))
    first, waiting = await one_sent_two_waiting(coalescer)
    assert len(broker.sent) == 1  # 2 and 3 linger for company beside 1
    await coalescer.close(timeout=0.05)  # sends them; the confirms do not come in time
    assert broker.sent[1][0] == ["m2", "m3"]
    for task in list(coalescer._sending):
        task.cancel()
    for task in [first, *waiting]:
        with pytest.raises(BrokerUnavailable):
            await task


async def test_each_message_takes_the_route_of_the_moment_it_goes() -> None:
    broker = Broker()
    route = Detour()
    coalescer = coalescer_of(broker, Coalescing(in_flight=1, max_shares=10), route)
    first, waiting = await one_sent_two_waiting(coalescer)
    route.detoured = True  # the route changes while shares 2 and 3 wait for company
    broker.confirms[0].set_result(None)
    await settle()
    assert broker.keys == ["share", "backlog"]
    assert broker.sent[1][0] == ["m2", "m3"]
    broker.confirms[1].set_result(None)
    await asyncio.gather(first, *waiting)
