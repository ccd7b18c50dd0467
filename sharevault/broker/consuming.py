"""RabbitMQ's consuming side: the worker's lanes on a connection of their own (the caller
reconnects), and readers for the operator tools (DLQ passes, journal replay)."""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections.abc import AsyncIterator, Awaitable, Callable, Mapping, Sequence
from contextlib import asynccontextmanager
from dataclasses import dataclass, field
from datetime import datetime
from typing import Any, Protocol
from urllib.parse import urlsplit

import aio_pika
import aiormq
from aio_pika.abc import (
    AbstractChannel,
    AbstractConnection,
    AbstractIncomingMessage,
    AbstractQueue,
    FieldValue,
)
from aio_pika.connection import make_url

log = logging.getLogger(__name__)

# Seconds to wait for the broker to answer a cancel or close before going on without it.
CLOSE_WAIT = 5.0
# Seconds one connection attempt to one host may take, handshake included.
CONNECT_ATTEMPT = 15.0
# aiormq raises StopAsyncIteration when the socket is already at EOF as the handshake starts (a
# broker or proxy that accepts and drops the connection); inside an async generator Python would
# turn it into a RuntimeError that kills the worker, so it is a connect error like the others.
CONNECT_ERRORS = (TimeoutError, OSError, aiormq.exceptions.AMQPError, StopAsyncIteration)


class BrokerUnavailable(Exception):
    """The broker did not confirm or answer: it is unreachable, refused, or was too slow."""


def unavailable(what: str, exc: BaseException) -> BaseException:
    """The error to raise for a client error: BrokerUnavailable, or CancelledError when the task
    is being cancelled (aiormq turns a cancel during a channel's RPC into a channel error; a loop
    that takes that for an outage would never end)."""
    task = asyncio.current_task()
    if task is not None and task.cancelling():
        return asyncio.CancelledError()
    return BrokerUnavailable(f"{what}: {type(exc).__name__}")


class Delivery(Protocol):
    """A message received from a queue, to ack or give back (aio-pika's satisfies it)."""

    @property
    def body(self) -> bytes: ...
    @property
    def headers(self) -> Mapping[str, Any]: ...
    @property
    def content_type(self) -> str | None: ...
    @property
    def message_id(self) -> str | None: ...
    @property
    def redelivered(self) -> bool | None: ...
    @property
    def timestamp(self) -> datetime | None: ...
    async def ack(self, multiple: bool = False) -> None: ...
    async def nack(self, multiple: bool = False, requeue: bool = True) -> None: ...


def split_urls(urls: str | Sequence[str]) -> list[str]:
    """The broker URLs of a setting: one, or several separated by commas (a cluster's nodes)."""
    if isinstance(urls, str):
        urls = urls.split(",")
    listed = [url.strip() for url in urls if url.strip()]
    if not listed:
        raise ValueError("no broker URL")
    return listed


def node_of(url: str) -> str:
    """host:port of a broker URL, for /readyz and logs (never its credentials)."""
    parts = urlsplit(url)
    return f"{parts.hostname or 'localhost'}:{parts.port or 5672}"


async def connect_first(
    urls: Sequence[str], name: str, *, timeout: float = 5.0
) -> tuple[AbstractConnection, str]:
    """A connection to the first of `urls` that answers, and that URL; BrokerUnavailable when
    none does. Each attempt is bounded (seen: a proxy that resets every handshake)."""
    failures: list[str] = []
    for url in urls:
        conn = aio_pika.Connection(make_url(url), client_properties={"connection_name": name})
        try:
            async with asyncio.timeout(CONNECT_ATTEMPT):
                await conn.connect(timeout=timeout)
        except CONNECT_ERRORS as exc:
            with contextlib.suppress(Exception):
                await conn.close()
            failures.append(f"{node_of(url)}: {type(exc).__name__}")
            continue
        return conn, url
    raise BrokerUnavailable(f"broker unreachable ({'; '.join(failures)})")


@asynccontextmanager
async def consume_lanes(
    urls: Sequence[str], name: str, lanes: Sequence[Lane]
) -> AsyncIterator[Consuming]:
    """Consume each lane's queue on one connection of its own (to the first of `urls` that
    answers), until the block ends or the connection (or a channel) is lost: `Consuming.lost`.
    The caller reconnects; deliveries in hand from a lost connection are already requeued by
    the broker (see is_stale)."""
    conn, url = await connect_first(urls, name)
    log.info("consuming on %s", node_of(url))
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
        raise BrokerUnavailable(f"connection lost: {type(exc).__name__}") from None
    finally:
        with contextlib.suppress(Exception):
            async with asyncio.timeout(CLOSE_WAIT):
                await conn.close()


@asynccontextmanager
async def read_queue(
    connection: AbstractConnection,
    queue: str,
    prefetch: int,
    arguments: Mapping[str, Any] | None,
) -> AsyncIterator[Deliveries]:
    """Deliveries of a queue or stream. What is not acked when the block ends goes back to the
    queue as the channel closes (a stream simply forgets it: nothing to give back)."""
    channel = await connection.channel()
    try:
        await channel.set_qos(prefetch_count=prefetch)
        declared = await channel.declare_queue(queue, passive=True)
        deliveries = Deliveries(channel, prefetch)
        given: dict[str, FieldValue] | None = dict(arguments) if arguments else None
        await declared.consume(deliveries.put, arguments=given)
        yield deliveries
    finally:
        # No nack of what is buffered: streams refuse nack, and a close returns it anyway.
        with contextlib.suppress(Exception):
            async with asyncio.timeout(CLOSE_WAIT):
                await channel.close()


def is_stale(delivery: Delivery) -> bool:
    """True when the channel it came on has died: the broker has requeued it already."""
    if not isinstance(delivery, AbstractIncomingMessage):
        return False
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

    async def ack_through(self, delivery: Delivery) -> None:
        """Ack this delivery and every earlier one, and wait until the broker has taken it in.

        One settle, not one per message: a quorum queue's client keeps settles beyond a small
        window pending in the channel, and a channel that closes then drops them (the messages
        come back). The round trip after it makes sure the settle left the channel."""
        await delivery.ack(multiple=True)
        await self._channel.set_qos(prefetch_count=self._prefetch)

    async def put(self, delivery: AbstractIncomingMessage) -> None:
        await self._queue.put(delivery)

    async def next(self, timeout: float) -> Delivery | None:
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
    handler: Callable[[Delivery], Awaitable[None]]
