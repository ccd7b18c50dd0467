"""RabbitMQ: the broker link of a process, on the first of its hosts that answers and on another
after a loss. Publishing in publisher.py, counts and locks in admin.py, queue names in
topology.py, consuming and reading in consuming.py."""

from __future__ import annotations

import asyncio
import contextlib
import logging
import random
import time
from collections.abc import AsyncIterator, Mapping, Sequence
from contextlib import asynccontextmanager
from typing import Any

import aiormq
from aio_pika.abc import AbstractChannel, AbstractConnection, AbstractExchange
from tenacity import (
    AsyncRetrying,
    RetryCallState,
    retry_if_exception_type,
    wait_random_exponential,
)

from sharevault.background import stopped
from sharevault.broker.admin import Admin
from sharevault.broker.consuming import (
    CLOSE_WAIT,
    CONNECT_ERRORS,
    BrokerUnavailable,
    Consuming,
    Deliveries,
    Lane,
    connect_first,
    consume_lanes,
    node_of,
    read_queue,
    split_urls,
)
from sharevault.broker.publisher import Publisher
from sharevault.broker.topology import QueueOptions, Topology, declare_topology

log = logging.getLogger(__name__)

# Pauses between attempts to link again: jittered, growing from 0.2 s up to this.
RECONNECT_MAX = 5.0
# A nacked publish opens a new confirming channel, at most this often (seconds).
RENEW_INTERVAL = 1.0


class Broker:
    """The link to the broker: one connection and one confirming channel, connected (and after
    a loss, connected again) in the background; `publisher` and `admin` work over it."""

    def __init__(
        self,
        urls: str | Sequence[str],
        prefix: str,
        *,
        name: str = "sharevault",
        options: QueueOptions | None = None,
        robust: bool = True,
        declare: bool = True,
        shuffle: bool = False,
    ) -> None:
        self._urls = split_urls(urls)
        if shuffle:
            # Spread the processes over a cluster's nodes, as RabbitMQ's client guides advise.
            random.shuffle(self._urls)
        self.topology = Topology(prefix)
        self.options = options or QueueOptions()
        self._name = name
        self._robust = robust
        self._declare = declare
        self._url: str | None = None
        self._connection: AbstractConnection | None = None
        self._channel: AbstractChannel | None = None
        self._exchange: AbstractExchange | None = None
        self._link_task: asyncio.Task[None] | None = None
        self._lost = asyncio.Event()
        self.declared = asyncio.Event()
        self._down_since: float | None = time.time()
        self._last_error = "not connected yet"
        self._closing = False
        self._renewed = 0.0
        self._retired: set[asyncio.Task[None]] = set()
        self.publisher = Publisher(self)
        self.admin = Admin(self)

    async def __aenter__(self) -> Broker:
        if self._robust:
            self._link_task = asyncio.create_task(self._keep_linked(), name="broker-link")
            return self
        # Operator tools: one pass over the hosts, a clear error, no silent reconnect.
        await self._link_once()
        return self

    async def __aexit__(self, *exc: object) -> None:
        self._closing = True
        if self._link_task is not None:
            await stopped(self._link_task)
        if self._connection is not None:
            with contextlib.suppress(Exception):
                async with asyncio.timeout(CLOSE_WAIT):
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
            and _alive(conn)
            and channel is not None
            and not channel.is_closed
        )

    @property
    def node(self) -> str | None:
        """host:port of the node the link is on (None while not connected)."""
        return node_of(self._url) if self._url is not None and self.ready else None

    @property
    def problem(self) -> str | None:
        """What is wrong with the broker link, in words for /readyz and logs; None when fine."""
        if self.ready:
            return None
        since = self._down_since or time.time()
        return f"not connected for {time.time() - since:.1f}s ({self._last_error}); reconnecting"

    async def _keep_linked(self) -> None:
        while True:
            async for attempt in AsyncRetrying(
                retry=retry_if_exception_type(BrokerUnavailable),
                wait=wait_random_exponential(multiplier=0.2, max=RECONNECT_MAX),
                before_sleep=self._retrying,
            ):
                with attempt:
                    await self._link_once()
            await self._lost.wait()
            self._lost.clear()

    def _retrying(self, state: RetryCallState) -> None:
        log.warning("broker link: %s; retrying in %.1fs", self._last_error, state.upcoming_sleep)

    def _hosts(self) -> list[str]:
        """Every host, the one we were on last: after a loss, another node is tried first."""
        if self._url not in self._urls:
            return list(self._urls)
        index = self._urls.index(self._url) + 1
        return self._urls[index:] + self._urls[:index]

    async def _link_once(self) -> None:
        """Connect (if the connection is gone) and open the confirming channel."""
        conn = self._connection
        if conn is None or not _alive(conn):
            self._connection = None
            if conn is not None:
                with contextlib.suppress(Exception):
                    async with asyncio.timeout(CLOSE_WAIT):
                        await conn.close()
            try:
                conn, self._url = await connect_first(self._hosts(), self._name)
            except BrokerUnavailable as exc:
                self._last_error = str(exc)
                raise
            conn.close_callbacks.add(self._on_lost)
            self._connection = conn
        try:
            await self._open_channel(conn)
        except CONNECT_ERRORS as exc:
            # Lost while declaring: start over on a fresh connection.
            self._last_error = f"lost while declaring: {type(exc).__name__}"
            self._connection = None
            with contextlib.suppress(Exception):
                await conn.close()
            raise BrokerUnavailable(self._last_error) from None

    async def _open_channel(self, conn: AbstractConnection) -> None:
        if self._declare and not self.declared.is_set() and self._url is not None:
            await declare_topology(self._url, self.topology, self.options)
        channel = await conn.channel(publisher_confirms=True, on_return_raises=True)
        # ensure=False: no passive declare when the channel reopens. Were the exchange deleted
        # under us, the broker would close the channel on every publish; declaring it on each
        # reopen would fail again, in a loop that never ends.
        self._exchange = await channel.get_exchange(self.topology.ingest, ensure=False)
        channel.close_callbacks.add(self._on_lost)
        old, self._channel = self._channel, channel
        if old is not None and not old.is_closed:
            self._retire(old)
        if self._down_since is None and self.declared.is_set():
            log.info("broker: new confirming channel on %s", node_of(self._url or ""))
            return
        down = time.time() - (self._down_since or time.time())
        self._down_since = None
        if self.declared.is_set():
            log.info("broker link back on %s after %.1fs", node_of(self._url or ""), down)
        else:
            self.declared.set()
            log.info(
                "broker connected to %s, topology %s",
                node_of(self._url or ""),
                self.topology.prefix,
            )

    def _on_lost(self, sender: object, exc: BaseException | None = None) -> None:
        if self._closing or (sender is not self._connection and sender is not self._channel):
            return  # our own close, or a connection or channel already replaced
        if self._down_since is None:
            self._down_since = time.time()
            what = "connection lost" if sender is self._connection else "channel closed"
            self._last_error = f"{what}: {type(exc).__name__}" if exc else what
            log.warning("broker %s; linking again", self._last_error)
        self._lost.set()

    def refused(self, channel: AbstractChannel) -> None:
        """A publish on `channel` was nacked: open a new confirming channel (at most once per
        RENEW_INTERVAL) on the same connection. Seen with RabbitMQ 3.10 when the node leading a
        quorum queue is killed: a channel that published through the election is nacked on every
        publish from then on (for minutes), while a new channel on the same node is not."""
        now = time.monotonic()
        if self._closing or channel is not self._channel or now - self._renewed < RENEW_INTERVAL:
            return
        self._renewed = now
        log.warning("broker: a publish was nacked; opening a new confirming channel")
        self._lost.set()

    def _retire(self, channel: AbstractChannel) -> None:
        """Close a replaced channel in the background; publishes still on it fail (no confirm
        was given for them, so the gateway never acknowledged them)."""

        async def close() -> None:
            with contextlib.suppress(Exception):
                async with asyncio.timeout(CLOSE_WAIT):
                    await channel.close()

        task = asyncio.create_task(close(), name="broker-retire-channel")
        self._retired.add(task)
        task.add_done_callback(self._retired.discard)

    def confirming(self) -> tuple[AbstractChannel, AbstractExchange]:
        """The confirming channel and the ingest exchange (Publisher); BrokerUnavailable when
        the link is down."""
        if not self.ready or self._channel is None or self._exchange is None:
            raise BrokerUnavailable("broker not connected")
        return self._channel, self._exchange

    async def plain_channel(self) -> aiormq.abc.AbstractChannel:
        """A channel of this connection that never reopens by itself (Admin). A robust one that
        the broker closes (a 404 answering a passive declare) reopened and stayed open: the
        gateway's queue gauges leaked one per sample while a queue was missing."""
        if self._connection is None or self._connection.transport is None:
            raise BrokerUnavailable("broker not connected")
        # aiormq's own deadline on the open: a cancel from outside was seen to be lost there.
        return await self._connection.transport.connection.channel(timeout=CLOSE_WAIT)

    @asynccontextmanager
    async def consuming(self, lanes: Sequence[Lane]) -> AsyncIterator[Consuming]:
        """Consume the lanes on a connection of their own (see consuming.consume_lanes), on the
        node of the link first."""
        await self.declared.wait()
        hosts = self._hosts()
        async with consume_lanes(hosts[-1:] + hosts[:-1], f"{self._name}-consumer", lanes) as s:
            yield s

    @asynccontextmanager
    async def reader(
        self, queue: str, *, prefetch: int, arguments: Mapping[str, Any] | None = None
    ) -> AsyncIterator[Deliveries]:
        """Deliveries of a queue or stream on this connection (see consuming.read_queue)."""
        if self._connection is None:
            raise BrokerUnavailable("broker not connected")
        async with read_queue(self._connection, queue, prefetch, arguments) as deliveries:
            yield deliveries


def _alive(conn: AbstractConnection) -> bool:
    """Not closed by us, nor lost (a lost connection is not `is_closed` until closed)."""
    return not conn.is_closed and conn.connected.is_set()
