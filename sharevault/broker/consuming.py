"""RabbitMQ's consuming side: the worker's lanes on a connection of their own (the caller
reconnects), and readers for the operator tools (DLQ passes, journal replay)."""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import AsyncIterator, Awaitable, Callable, Sequence
from contextlib import asynccontextmanager
from dataclasses import dataclass, field

import aio_pika
import aiormq
from aio_pika.abc import (
    AbstractChannel,
    AbstractConnection,
    AbstractIncomingMessage,
    AbstractQueue,
    FieldValue,
)

# Seconds to wait for the broker to answer a cancel or close before going on without it.
CLOSE_WAIT = 5.0
# aiormq raises StopAsyncIteration when the socket is already at EOF as the handshake starts (a
# broker or proxy that accepts and drops the connection); inside an async generator Python would
# turn it into a RuntimeError that kills the worker, so it is a connect error like the others.
CONNECT_ERRORS = (TimeoutError, OSError, aiormq.exceptions.AMQPError, StopAsyncIteration)


class ConsumingLost(Exception):
    """The consuming connection could not be opened or went away."""


@asynccontextmanager
async def consume_lanes(url: str, name: str, lanes: Sequence[Lane]) -> AsyncIterator[Consuming]:
    """Consume each lane's queue on one connection of its own, until the block ends or the
    connection (or a channel) is lost: `Consuming.lost`. The caller reconnects; deliveries in
    hand from a lost connection are already requeued by the broker (see is_stale)."""
    try:
        conn = await aio_pika.connect(url, timeout=5, client_properties={"connection_name": name})
    except CONNECT_ERRORS as exc:
        raise ConsumingLost(f"unreachable: {type(exc).__name__}") from None
    session = Consuming(asyncio.get_running_loop().create_future())
    conn.close_callbacks.add(session.on_close)
    try:
        for lane in lanes:
            channel = await conn.channel(publisher_confirms=False)
            # A channel can close alone (e.g. the broker's consumer_timeout): same as lost.
            channel.close_callbacks.add(session.on_close)
            await channel.set_qos(prefetch_count=lane.prefetch)
            queue = await channel.get_queue(lane.queue, ensure=False)
            tag = await queue.consume(lane.handler, no_ack=False)
            session.consumers.append((queue, tag))
        yield session
    except (aiormq.exceptions.AMQPError, ConnectionError, StopAsyncIteration) as exc:
        raise ConsumingLost(f"connection lost: {type(exc).__name__}") from None
    finally:
        with contextlib.suppress(Exception):
            async with asyncio.timeout(CLOSE_WAIT):
                await conn.close()


@asynccontextmanager
async def read_queue(
    connection: AbstractConnection,
    queue: str,
    prefetch: int,
    arguments: dict[str, FieldValue] | None,
) -> AsyncIterator[Deliveries]:
    """Deliveries of a queue or stream. What is not acked when the block ends goes back to the
    queue as the channel closes (a stream simply forgets it: nothing to give back)."""
    channel = await connection.channel()
    try:
        await channel.set_qos(prefetch_count=prefetch)
        declared = await channel.declare_queue(queue, passive=True)
        deliveries = Deliveries(channel, prefetch)
        await declared.consume(deliveries.put, arguments=arguments)
        yield deliveries
    finally:
        # No nack of what is buffered: streams refuse nack, and a close returns it anyway.
        with contextlib.suppress(Exception):
            async with asyncio.timeout(CLOSE_WAIT):
                await channel.close()


def is_stale(delivery: AbstractIncomingMessage) -> bool:
    """True when the channel it came on has died: the broker has requeued it already."""
    try:
        delivery.channel  # noqa: B018 (the property raises once the channel is closed)
    except aiormq.exceptions.ChannelInvalidStateError:
        return True
    return False


@dataclass
class Consuming:
    """A consuming connection: `lost` is done once it closed under us."""

    lost: asyncio.Future[None]
    consumers: list[tuple[AbstractQueue, str]] = field(default_factory=list)

    def on_close(self, _sender: object, _exc: BaseException | None = None) -> None:
        if not self.lost.done():
            self.lost.set_result(None)

    async def cancel(self) -> None:
        """Stop deliveries (bounded wait); what is in hand stays ours to ack until the close."""
        for queue, tag in self.consumers:
            with contextlib.suppress(Exception):
                async with asyncio.timeout(CLOSE_WAIT):
                    await queue.cancel(tag)


class Deliveries:
    """Deliveries of one consumer, in order, taken one at a time."""

    def __init__(self, channel: AbstractChannel, prefetch: int) -> None:
        self._channel = channel
        self._prefetch = prefetch
        self._queue: asyncio.Queue[AbstractIncomingMessage] = asyncio.Queue()

    async def ack_through(self, delivery: AbstractIncomingMessage) -> None:
        """Ack this delivery and every earlier one, and wait until the broker has taken it in.

        One settle, not one per message: a quorum queue's client keeps settles beyond a small
        window pending in the channel, and a channel that closes then drops them (the messages
        come back). The round trip after it makes sure the settle left the channel."""
        await delivery.ack(multiple=True)
        await self._channel.set_qos(prefetch_count=self._prefetch)

    async def put(self, delivery: AbstractIncomingMessage) -> None:
        await self._queue.put(delivery)

    async def next(self, timeout: float) -> AbstractIncomingMessage | None:
        """The next delivery, or None after `timeout` seconds without one."""
        # asyncio.timeout, not wait_for: on 3.11 wait_for can lose a cancel that races the get.
        try:
            async with asyncio.timeout(timeout):
                return await self._queue.get()
        except TimeoutError:
            return None


@dataclass(frozen=True)
class Lane:
    """One queue to consume, how many unacked deliveries it may have, and who receives them."""

    queue: str
    prefetch: int
    handler: Callable[[AbstractIncomingMessage], Awaitable[None]]
