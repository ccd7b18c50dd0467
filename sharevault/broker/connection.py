"""RabbitMQ: the broker link of a process, publish with confirm; queue names in topology.py,
consuming and reading in consuming.py."""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
from collections.abc import AsyncIterator, Mapping, Sequence
from contextlib import asynccontextmanager
from typing import Any

import aio_pika
import aiormq
from aio_pika.abc import (
    AbstractChannel,
    AbstractConnection,
    AbstractExchange,
    FieldValue,
)
from aio_pika.connection import make_url

from sharevault.broker.consuming import (
    CLOSE_WAIT,
    CONNECT_ERRORS,
    Consuming,
    ConsumingLost,
    Deliveries,
    Lane,
    consume_lanes,
    read_queue,
)
from sharevault.broker.topology import (
    BACKLOG_KEY,
    SHARE_KEY,
    QueueOptions,
    Topology,
    declare_topology,
)
from sharevault.coalescing import Coalescer, Coalescing
from sharevault.config import Settings
from sharevault.messages import ShareMessage
from sharevault.metrics import DETOUR

log = logging.getLogger(__name__)

_CONNECT_ERRORS = CONNECT_ERRORS
CONNECT_ATTEMPT = 15.0  # seconds one connection attempt may take, handshake included
LIVE_CHECK_TIMEOUT = 5.0  # a look at the live queue's consumers that takes longer is skipped
_PUBLISH_ERRORS = (
    aio_pika.exceptions.DeliveryError,
    aio_pika.exceptions.PublishError,
    aio_pika.exceptions.AMQPError,
    aiormq.exceptions.AMQPError,
    ConnectionError,
    RuntimeError,
)


class BrokerUnavailable(Exception):
    """The broker did not confirm: it is unreachable, refused the message, or was too slow."""


class Broker:
    """One robust connection and one confirming channel; connects (and reconnects) in background."""

    def __init__(
        self,
        url: str,
        prefix: str,
        *,
        name: str = "sharevault",
        options: QueueOptions | None = None,
        robust: bool = True,
        coalescing: Coalescing | None = None,
    ) -> None:
        self._url = url
        self.topology = Topology(prefix)
        self.options = options or QueueOptions()
        self._name = name
        self._robust = robust
        self._connection: AbstractConnection | None = None
        self._channel: AbstractChannel | None = None
        self._exchange: AbstractExchange | None = None
        self._exchanges: dict[str, AbstractExchange] = {}
        self._connect_task: asyncio.Task[None] | None = None
        self.declared = asyncio.Event()
        self._down_since: float | None = time.time()
        self._last_error = "not connected yet"
        self._closing = False
        self._detour = False
        self._coalescer = Coalescer(
            self.publish_raw,
            self._ingest_key,
            coalescing or Coalescing(),
            stopped=lambda: BrokerUnavailable("publisher stopped before the confirm"),
        )

    @classmethod
    def from_settings(cls, settings: Settings, *, name: str, robust: bool = True) -> Broker:
        """The broker of these settings, its queues declared with their arguments."""
        return cls(
            settings.amqp_url.get_secret_value(),
            settings.amqp_prefix,
            name=name,
            options=QueueOptions.from_settings(settings),
            robust=robust,
            coalescing=Coalescing(
                linger=settings.publish_linger_ms / 1000,
                in_flight=settings.publish_in_flight,
                max_shares=settings.publish_batch,
                max_bytes=settings.publish_batch_bytes,
            ),
        )

    async def __aenter__(self) -> Broker:
        if self._robust:
            self._connect_task = asyncio.create_task(self._connect_forever(), name="broker-connect")
            return self
        # Operator tools: one attempt, a clear error, and no silent reconnect mid-operation.
        try:
            conn = await aio_pika.connect(self._url, timeout=5, **self._props())
        except _CONNECT_ERRORS as exc:
            raise BrokerUnavailable(f"broker unreachable ({type(exc).__name__})") from None
        await self._open_channel(conn)
        return self

    async def __aexit__(self, *exc: object) -> None:
        await self._coalescer.close(CLOSE_WAIT)
        self._closing = True
        if self._connect_task is not None:
            self._connect_task.cancel()
            await asyncio.gather(self._connect_task, return_exceptions=True)
        if self._connection is not None:
            with contextlib.suppress(Exception):
                async with asyncio.timeout(CLOSE_WAIT):
                    await self._connection.close()

    def _props(self) -> dict[str, Any]:
        return {"client_properties": {"connection_name": self._name}}

    async def wait_ready(self, timeout: float) -> None:
        """Block until the topology is declared (start-up of tests and workers)."""
        await asyncio.wait_for(self.declared.wait(), timeout)

    @property
    def ready(self) -> bool:
        conn, channel = self._connection, self._channel
        return (
            self.declared.is_set()
            and conn is not None
            and not conn.is_closed
            and channel is not None
            and not channel.is_closed
            and conn.connected.is_set()
        )

    @property
    def problem(self) -> str | None:
        """What is wrong with the broker link, in words for /readyz and logs; None when fine."""
        if self.ready:
            return None
        since = self._down_since or time.time()
        return f"not connected for {time.time() - since:.1f}s ({self._last_error}); reconnecting"

    async def _connect_forever(self) -> None:
        delay = 0.2
        while True:
            # Built by hand rather than with connect_robust, so that an attempt that hangs (seen
            # behind a proxy that resets every handshake) is bounded and its connection closed.
            conn = aio_pika.RobustConnection(
                make_url(self._url, reconnect_interval=1), **self._props()
            )
            try:
                async with asyncio.timeout(CONNECT_ATTEMPT):
                    await conn.connect(timeout=5)
            except _CONNECT_ERRORS as exc:
                with contextlib.suppress(Exception):
                    await conn.close()
                self._last_error = f"unreachable: {type(exc).__name__}"
                log.warning("broker unreachable (%s), retrying in %.1fs", type(exc).__name__, delay)
            else:
                try:
                    await self._open_channel(conn)
                except _CONNECT_ERRORS as exc:
                    # Lost while declaring: start over on a fresh connection.
                    self._last_error = f"lost while declaring: {type(exc).__name__}"
                    log.warning("broker %s, retrying in %.1fs", self._last_error, delay)
                    with contextlib.suppress(Exception):
                        await conn.close()
                else:
                    conn.close_callbacks.add(self._on_lost)
                    conn.reconnect_callbacks.add(self._on_reconnected)
                    self._connection = conn
                    return
            await asyncio.sleep(delay)
            delay = min(delay * 2, 5.0)

    async def _open_channel(self, conn: AbstractConnection) -> None:
        await declare_topology(self._url, self.topology, self.options)
        channel = await conn.channel(publisher_confirms=True, on_return_raises=True)
        # ensure=False: no passive declare that a robust channel would repeat when it reopens.
        # Were the exchange deleted under us, the broker would close the channel on every
        # publish; re-declaring it on each reopen would fail again, in a loop that never ends.
        self._exchange = await channel.get_exchange(self.topology.ingest, ensure=False)
        self._connection = conn
        self._channel = channel
        self._down_since = None
        self.declared.set()
        log.info("broker connected, topology %s declared", self.topology.prefix)

    def _on_lost(self, _sender: object, exc: BaseException | None = None) -> None:
        if self._closing or self._down_since is not None:
            return  # our own close, or already said
        self._down_since = time.time()
        self._last_error = f"connection lost: {type(exc).__name__}" if exc else "connection closed"
        log.warning("broker %s; reconnecting every 1s", self._last_error)

    def _on_reconnected(self, _sender: object) -> None:
        down = time.time() - (self._down_since or time.time())
        self._down_since = None
        log.info("broker reconnected after %.1fs; consumers resume", down)

    @property
    def detoured(self) -> bool:
        """True while new shares go straight to the backlog (`watch_live`)."""
        return self._detour

    def _ingest_key(self) -> str:
        return BACKLOG_KEY if self._detour else SHARE_KEY

    async def watch_live(self, every: float) -> None:
        """Forever (the gateway runs it): look every `every` seconds whether any worker consumes
        the live queue. While none does, new shares go straight to the backlog queue (and the
        journal, as ever): they would only wait out the live TTL there and move to the backlog
        anyway, and that move (at-least-once dead-lettering) costs the broker a second durable
        write of every share, just when it is under the most strain. Shares are as durable on
        either route; workers drain both, live first."""
        while True:
            try:
                async with asyncio.timeout(LIVE_CHECK_TIMEOUT):
                    counts = await self.queue_counts(self.topology.shares)
            except (BrokerUnavailable, *_PUBLISH_ERRORS, TimeoutError):
                pass  # the broker link is away: /readyz says so; keep the route we had
            else:
                self._set_detour(counts is not None and counts[1] == 0)
            await asyncio.sleep(every)

    def _set_detour(self, detour: bool) -> None:
        if detour == self._detour:
            return
        self._detour = detour
        DETOUR.set(1 if detour else 0)
        if detour:
            log.warning("no worker consumes %s: new shares go to the backlog", self.topology.shares)
        else:
            log.info("a worker consumes %s again: new shares go live", self.topology.shares)

    async def publish(self, message: ShareMessage, *, timeout: float) -> None:
        """Publish a share persistently (coalesced with those accepted alongside it, see
        coalescing.py) and wait for the broker's confirm; BrokerUnavailable otherwise."""
        await self._coalescer.publish(message, timeout=timeout)

    async def publish_raw(
        self,
        body: bytes,
        *,
        message_id: str,
        routing_key: str,
        timeout: float,
        headers: Mapping[str, Any] | None = None,
        exchange: str | None = None,
        expiration: float | None = None,
        content_type: str | None,
    ) -> None:
        """Publish to `exchange` (default ingest, "" the default exchange) and await the confirm.
        `content_type` says how the body is encoded (schemas/message.py): always said, as a
        body moved from one queue to another must keep its own."""
        if not self.ready or self._exchange is None or self._channel is None:
            raise BrokerUnavailable("broker not connected")
        msg = aio_pika.Message(
            body,
            message_id=message_id,
            content_type=content_type,
            delivery_mode=aio_pika.DeliveryMode.PERSISTENT,
            timestamp=time.time(),
            headers=dict(headers or {}),
            expiration=expiration,
        )
        try:
            async with asyncio.timeout(timeout):
                target = self._exchange
                if exchange == "":
                    target = self._channel.default_exchange
                elif exchange is not None:
                    target = await self._get_exchange(self._channel, exchange)
                await target.publish(msg, routing_key=routing_key, mandatory=True)
        except TimeoutError:
            raise BrokerUnavailable("no confirm in time") from None
        except _PUBLISH_ERRORS as exc:
            raise BrokerUnavailable(f"publish failed: {type(exc).__name__}") from None

    async def _get_exchange(self, channel: AbstractChannel, name: str) -> AbstractExchange:
        # One object per exchange, not per message (DLQ tools republish thousands); not declared,
        # as above: the topology is declared when the broker connects.
        if name not in self._exchanges:
            self._exchanges[name] = await channel.get_exchange(name, ensure=False)
        return self._exchanges[name]

    @asynccontextmanager
    async def consuming(self, lanes: Sequence[Lane]) -> AsyncIterator[Consuming]:
        """Consume the lanes on a connection of their own (see consuming.consume_lanes)."""
        await self.declared.wait()
        try:
            async with consume_lanes(self._url, f"{self._name}-consumer", lanes) as session:
                yield session
        except ConsumingLost as exc:
            raise BrokerUnavailable(str(exc)) from None

    @asynccontextmanager
    async def reader(
        self, queue: str, *, prefetch: int, arguments: dict[str, FieldValue] | None = None
    ) -> AsyncIterator[Deliveries]:
        """Deliveries of a queue or stream on this connection (see consuming.read_queue)."""
        if self._connection is None:
            raise BrokerUnavailable("broker not connected")
        async with read_queue(self._connection, queue, prefetch, arguments) as deliveries:
            yield deliveries

    async def hold_lock(self, name: str) -> None:
        """Own an exclusive queue as a mutex until this connection closes; raises when taken."""
        channel = await self._plain_channel()
        try:
            await channel.queue_declare(name, exclusive=True, auto_delete=True)
        except aiormq.exceptions.ChannelLockedResource:
            raise BrokerUnavailable(f"{name} is held by another command") from None

    async def queue_depth(self, name: str) -> int:
        """Messages ready in a queue (not counting unacked ones)."""
        counts = await self.queue_counts(name)
        if counts is None:
            raise BrokerUnavailable(f"queue {name} does not exist")
        return counts[0]

    async def queue_counts(self, name: str) -> tuple[int, int] | None:
        """(messages ready, consumers) of a queue, None when it does not exist (`stats`)."""
        channel = await self._plain_channel()
        try:
            declared = await channel.queue_declare(name, passive=True)
        except aiormq.exceptions.ChannelNotFoundEntity:
            return None  # the broker closed this channel with its answer
        finally:
            if not channel.is_closed:
                with contextlib.suppress(Exception):
                    await channel.close()
        return int(declared.message_count or 0), int(declared.consumer_count or 0)

    async def _plain_channel(self) -> aiormq.abc.AbstractChannel:
        """A channel of this connection that never reopens by itself. A robust one that the
        broker closes (a 404 answering a passive declare) reopens and stays open: the gateway's
        queue gauges leaked one per sample while a queue was missing."""
        if self._connection is None or self._connection.transport is None:
            raise BrokerUnavailable("broker not connected")
        return await self._connection.transport.connection.channel()
