"""RabbitMQ: the only package that imports aio-pika (link, publisher, admin, topology,
consuming)."""

from __future__ import annotations

from sharevault.broker.admin import Admin
from sharevault.broker.connection import Broker
from sharevault.broker.consuming import (
    BrokerUnavailable,
    Consuming,
    Deliveries,
    Delivery,
    Lane,
    is_stale,
    split_urls,
)
from sharevault.broker.publisher import Publisher
from sharevault.broker.topology import (
    QUORUM,
    QueueOptions,
    Topology,
    declare_topology,
    delete_topology,
)

__all__ = [
    "QUORUM",
    "Admin",
    "Broker",
    "BrokerUnavailable",
    "Consuming",
    "Deliveries",
    "Delivery",
    "Lane",
    "Publisher",
    "QueueOptions",
    "Topology",
    "declare_topology",
    "delete_topology",
    "is_stale",
    "split_urls",
]
