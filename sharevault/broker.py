"""RabbitMQ: the only module that knows the topology (declare, publish with confirm, consume)."""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
from collections.abc import Awaitable, Callable, Mapping
from dataclasses import dataclass
from typing import Any

import aio_pika
import aiormq
from aio_pika.abc import (
    AbstractChannel,
    AbstractExchange,
    AbstractIncomingMessage,
    AbstractQueue,
    AbstractRobustConnection,
    FieldValue,
)

from sharevault.schemas import ShareMessage

log = logging.getLogger(__name__)

QUORUM: dict[str, FieldValue] = {"x-queue-type": "quorum"}
SHARE_KEY = "share"


class BrokerUnavailable(Exception):
    """The broker did not confirm: it is unreachable, refused the message, or was too slow."""


@dataclass(frozen=True)
class Topology:
    """Names of every exchange and queue, all under one prefix."""

    prefix: str

    @property
    def ingest(self) -> str:
        return f"{self.prefix}.ingest"

    @property
    def shares(self) -> str:
        return f"{self.prefix}.shares"

    @property
    def dead(self) -> str:
        return f"{self.prefix}.dead"

    @property
    def queues(self) -> tuple[str, ...]:
        return (self.shares, self.dead)


class Broker:
    """One robust connection and one confirming channel; connects (and reconnects) in background."""

    def __init__(self, url: str, prefix: str, *, name: str = "sharevault") -> None:
        self._url = url
        self.topology = Topology(prefix)
        self._name = name
        self._connection: AbstractRobustConnection | None = None
        self._channel: AbstractChannel | None = None
        self._exchange: AbstractExchange | None = None
        self._connect_task: asyncio.Task[None] | None = None
        self.declared = asyncio.Event()

    async def __aenter__(self) -> Broker:
        self._connect_task = asyncio.create_task(self._connect_forever(), name="broker-connect")
        return self

    async def __aexit__(self, *exc: object) -> None:
        if self._connect_task is not None:
            self._connect_task.cancel()
            await asyncio.gather(self._connect_task, return_exceptions=True)
        if self._connection is not None:
            await self._connection.close()

    async def wait_ready(self, timeout: float) -> None:
        """Block until the topology is declared (start-up of tests and workers)."""
        await asyncio.wait_for(self.declared.wait(), timeout)

    @property
    def ready(self) -> bool:
        conn, channel = self._connection, self._channel
        return (
            self.declared.is_set()
            and conn is not None
            and conn.connected.is_set()
            and channel is not None
            and not channel.is_closed
        )

    async def _connect_forever(self) -> None:
        delay = 0.2
        while True:
            try:
                conn = await aio_pika.connect_robust(
                    self._url,
                    timeout=5,
                    reconnect_interval=1,
                    client_properties={"connection_name": self._name},
                )
                break
            except (TimeoutError, OSError, aiormq.exceptions.AMQPError) as exc:
                log.warning("broker unreachable (%s), retrying in %.1fs", type(exc).__name__, delay)
                await asyncio.sleep(delay)
                delay = min(delay * 2, 5.0)
        self._connection = conn
        channel = await conn.channel(publisher_confirms=True, on_return_raises=True)
        self._exchange = await declare_topology(channel, self.topology)
        self._channel = channel
        self.declared.set()
        log.info("broker connected, topology %s declared", self.topology.prefix)

    async def publish(self, message: ShareMessage, *, timeout: float) -> None:
        """Publish persistently and wait for the broker's confirm; BrokerUnavailable otherwise."""
        await self.publish_raw(
            message.model_dump_json().encode(),
            message_id=message.message_id,
            routing_key=SHARE_KEY,
            timeout=timeout,
        )

    async def publish_raw(
        self,
        body: bytes,
        *,
        message_id: str,
        routing_key: str,
        timeout: float,
        headers: Mapping[str, Any] | None = None,
        exchange: str | None = None,
    ) -> None:
        if not self.ready or self._exchange is None or self._channel is None:
            raise BrokerUnavailable("broker not connected")
        target = self._exchange
        if exchange is not None:
            target = (
                self._channel.default_exchange
                if exchange == ""
                else await self._channel.get_exchange(exchange)
            )
        msg = aio_pika.Message(
            body,
            message_id=message_id,
            content_type="application/json",
            delivery_mode=aio_pika.DeliveryMode.PERSISTENT,
            timestamp=time.time(),
            headers=dict(headers or {}),
        )
        try:
            async with asyncio.timeout(timeout):
                await target.publish(msg, routing_key=routing_key, mandatory=True)
        except TimeoutError:
            raise BrokerUnavailable("no confirm in time") from None
        except (
            aio_pika.exceptions.DeliveryError,
            aio_pika.exceptions.PublishError,
            aio_pika.exceptions.AMQPError,
            aiormq.exceptions.AMQPError,
            ConnectionError,
            RuntimeError,
        ) as exc:
            raise BrokerUnavailable(f"publish failed: {type(exc).__name__}") from None

    async def consume(
        self, handler: Callable[[AbstractIncomingMessage], Awaitable[None]], *, prefetch: int
    ) -> Consumer:
        """Start consuming the share queue with `prefetch` unacked messages in hand at most."""
        await self.declared.wait()
        if self._connection is None:
            raise BrokerUnavailable("broker not connected")
        channel = await self._connection.channel(publisher_confirms=True)
        await channel.set_qos(prefetch_count=prefetch)
        queue = await channel.get_queue(self.topology.shares, ensure=False)
        tag = await queue.consume(handler, no_ack=False)
        return Consumer(channel, queue, tag)

    async def queue_depth(self, name: str) -> int:
        """Messages ready in a queue (not counting unacked ones)."""
        if self._channel is None:
            raise BrokerUnavailable("broker not connected")
        declared = await self._channel.declare_queue(name, passive=True)
        count = declared.declaration_result.message_count
        return int(count or 0)


@dataclass
class Consumer:
    channel: AbstractChannel
    queue: AbstractQueue
    tag: str

    async def cancel(self) -> None:
        """Stop deliveries; messages in hand stay ours to ack until the channel closes."""
        with contextlib.suppress(Exception):
            await self.queue.cancel(self.tag)

    async def close(self) -> None:
        with contextlib.suppress(Exception):
            await self.channel.close()


async def declare_topology(channel: AbstractChannel, topology: Topology) -> AbstractExchange:
    """Declare exchanges and queues idempotently; returns the ingest exchange."""
    exchange = await channel.declare_exchange(
        topology.ingest, aio_pika.ExchangeType.DIRECT, durable=True
    )
    shares = await channel.declare_queue(topology.shares, durable=True, arguments=QUORUM)
    await shares.bind(exchange, routing_key=SHARE_KEY)
    await channel.declare_queue(topology.dead, durable=True, arguments=QUORUM)
    return exchange


async def delete_topology(url: str, topology: Topology) -> None:
    """Remove every queue and exchange of a prefix (tests, teardown of a tenant)."""
    conn = await aio_pika.connect(url, timeout=5)
    try:
        channel = await conn.channel()
        for name in topology.queues:
            await channel.queue_delete(name)
        await channel.exchange_delete(topology.ingest)
    finally:
        await conn.close()
