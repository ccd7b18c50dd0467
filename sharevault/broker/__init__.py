"""RabbitMQ: the only package that imports aio-pika (topology, connection, consuming)."""

from __future__ import annotations

from sharevault.broker.connection import Broker, BrokerUnavailable
from sharevault.broker.consuming import Consuming, Deliveries, Lane, is_stale
from sharevault.broker.topology import (
    QUORUM,
    SHARE_KEY,
    QueueOptions,
    Topology,
    declare_topology,
    delete_topology,
)

__all__ = [
    "QUORUM",
    "SHARE_KEY",
    "Broker",
    "BrokerUnavailable",
    "Consuming",
    "Deliveries",
    "Lane",
    "QueueOptions",
    "Topology",
    "declare_topology",
    "delete_topology",
    "is_stale",
]
