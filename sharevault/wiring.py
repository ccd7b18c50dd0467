"""From settings to the broker link's options and the keyring: shared by the composition roots
(gateway app, worker, operator commands), so that the broker package never reads settings."""

from __future__ import annotations

from sharevault.broker import Broker, QueueOptions
from sharevault.config import Settings
from sharevault.crypto import Keyring


def keyring_of(settings: Settings) -> Keyring:
    """The keyring of these settings: its keys, and whether legacy seals still open."""
    return Keyring(settings.keyring, accept_legacy=settings.accept_legacy_seals)


def queue_options(settings: Settings) -> QueueOptions:
    """The queue arguments these settings decide (docs/queues.md)."""
    return QueueOptions(
        live_ttl_ms=round(settings.live_ttl * 1000),
        delivery_limit=settings.delivery_limit,
        retry_levels=len(settings.retry_delays),
        journal_max_age=settings.journal_max_age,
        journal_max_bytes=settings.journal_max_bytes,
        journal_segment_bytes=settings.journal_segment_bytes,
    )


def broker_of(
    settings: Settings, *, name: str, robust: bool = True, declare: bool = True
) -> Broker:
    """The broker link of these settings: its hosts, prefix and queue arguments. `declare=False`
    for read-only tools, which must never create a queue."""
    return Broker(
        settings.amqp_url.get_secret_value(),
        settings.amqp_prefix,
        name=name,
        options=queue_options(settings),
        robust=robust,
        declare=declare,
        shuffle=settings.amqp_shuffle,
    )
