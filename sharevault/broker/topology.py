"""RabbitMQ topology: every exchange and queue name, their arguments, declare and delete."""

from __future__ import annotations

import logging
from dataclasses import dataclass

import aio_pika
import aiormq
from aio_pika.abc import FieldValue

from sharevault.broker.consuming import connect_first, split_urls
from sharevault.messages import BACKLOG_KEY, DEAD_KEY, MAX_RETRY_LEVELS, SHARE_KEY, retry_key

log = logging.getLogger(__name__)

QUORUM: dict[str, FieldValue] = {"x-queue-type": "quorum"}


@dataclass(frozen=True)
class QueueOptions:
    """The queue arguments that settings decide (docs/queues.md)."""

    live_ttl_ms: int = 1000
    delivery_limit: int = 20
    retry_levels: int = 4
    journal_max_age: str = "7D"
    journal_max_bytes: int = 10_000_000_000
    journal_segment_bytes: int = 100_000_000


@dataclass(frozen=True)
class Topology:
    """Names of every exchange and queue, all under one prefix."""

    prefix: str

    @property
    def ingest(self) -> str:
        """The gateway publishes here: routed to the live queue and the journal at once."""
        return f"{self.prefix}.ingest"

    @property
    def recover(self) -> str:
        """Everything that is not live traffic: backlog, retry levels, dead letters."""
        return f"{self.prefix}.recover"

    @property
    def shares(self) -> str:
        return f"{self.prefix}.shares"

    @property
    def backlog(self) -> str:
        return f"{self.prefix}.backlog"

    @property
    def dead(self) -> str:
        return f"{self.prefix}.dead"

    @property
    def journal(self) -> str:
        return f"{self.prefix}.journal"

    @property
    def dlq_lock(self) -> str:
        return f"{self.prefix}.dead.lock"

    def retry(self, level: int) -> str:
        return f"{self.prefix}.retry.{level}"

    @property
    def queues(self) -> tuple[str, ...]:
        retries = tuple(self.retry(level) for level in range(MAX_RETRY_LEVELS))
        return (self.shares, self.backlog, self.dead, self.journal, self.dlq_lock, *retries)

    @property
    def exchanges(self) -> tuple[str, ...]:
        return (self.ingest, self.recover)


def _queue_arguments(topology: Topology, options: QueueOptions) -> dict[str, dict[str, FieldValue]]:
    """Every queue and its arguments; broker-side dead-lettering is at-least-once everywhere."""

    def moves_to(key: str) -> dict[str, FieldValue]:
        return {
            **QUORUM,
            "x-dead-letter-exchange": topology.recover,
            "x-dead-letter-routing-key": key,
            "x-dead-letter-strategy": "at-least-once",
            "x-overflow": "reject-publish",
        }

    limit: dict[str, FieldValue] = {"x-delivery-limit": options.delivery_limit}
    queues: dict[str, dict[str, FieldValue]] = {
        topology.shares: {
            **moves_to(BACKLOG_KEY),
            **limit,
            "x-message-ttl": options.live_ttl_ms,
        },
        topology.backlog: {**moves_to(DEAD_KEY), **limit},
        topology.dead: dict(QUORUM),
        topology.journal: {
            "x-queue-type": "stream",
            "x-max-age": options.journal_max_age,
            "x-max-length-bytes": options.journal_max_bytes,
            "x-stream-max-segment-size-bytes": options.journal_segment_bytes,
        },
    }
    # Retry levels: per-message expiration (set by the worker), then back to the backlog.
    for level in range(options.retry_levels):
        queues[topology.retry(level)] = moves_to(BACKLOG_KEY)
    return queues


def _bindings(topology: Topology, retry_levels: int) -> list[tuple[str, str, str]]:
    """(queue, exchange, routing key): one ingest publish lands in the live queue and journal,
    or (while no worker consumes the live queue, docs/queues.md) in the backlog and journal."""
    retries = [(topology.retry(n), topology.recover, retry_key(n)) for n in range(retry_levels)]
    return [
        (topology.shares, topology.ingest, SHARE_KEY),
        (topology.journal, topology.ingest, SHARE_KEY),
        (topology.backlog, topology.ingest, BACKLOG_KEY),
        (topology.journal, topology.ingest, BACKLOG_KEY),
        (topology.backlog, topology.recover, BACKLOG_KEY),
        (topology.dead, topology.recover, DEAD_KEY),
        *retries,
    ]


async def declare_topology(url: str, topology: Topology, options: QueueOptions) -> None:
    """Declare exchanges, queues and bindings idempotently, on a short connection of its own
    (to the first of the URLs, comma-separated, that answers)."""
    conn, _ = await connect_first(split_urls(url), "sharevault-declare")
    try:
        channel = await conn.channel()
        for name in topology.exchanges:
            await channel.declare_exchange(name, aio_pika.ExchangeType.DIRECT, durable=True)
        for name, arguments in _queue_arguments(topology, options).items():
            try:
                await channel.declare_queue(name, durable=True, arguments=arguments)
            except aiormq.exceptions.ChannelPreconditionFailed:
                # Declared earlier with other arguments (older version, other settings, or a
                # policy): keep it working as it is and say so; docs/queues.md tells how to change.
                log.warning("queue %s exists with other arguments; keeping them", name)
                channel = await conn.channel()
        for queue, exchange, key in _bindings(topology, options.retry_levels):
            bound = await channel.get_queue(queue, ensure=False)
            await bound.bind(exchange, routing_key=key)
    finally:
        await conn.close()


async def delete_topology(url: str, topology: Topology) -> None:
    """Remove every queue and exchange of a prefix (tests, teardown of a tenant)."""
    conn, _ = await connect_first(split_urls(url), "sharevault-delete")
    try:
        channel = await conn.channel()
        for name in topology.queues:
            await channel.queue_delete(name)
        for name in topology.exchanges:
            await channel.exchange_delete(name)
    finally:
        await conn.close()
