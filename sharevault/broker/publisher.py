"""Publishing with confirm over the broker link: the gateway's shares, the worker's moves to a
retry level or the DLQ, the DLQ tools' republishing."""

from __future__ import annotations

import asyncio
import time
from typing import TYPE_CHECKING

import aio_pika
import aiormq
from aio_pika.abc import AbstractChannel, AbstractExchange

from sharevault.broker.consuming import BrokerUnavailable, unavailable
from sharevault.messages import Envelope

if TYPE_CHECKING:
    from sharevault.broker.connection import Broker

_PUBLISH_ERRORS = (
    aio_pika.exceptions.DeliveryError,
    aio_pika.exceptions.PublishError,
    aio_pika.exceptions.AMQPError,
    aiormq.exceptions.AMQPError,
    ConnectionError,
    RuntimeError,
)


class Publisher:
    """Publishes persistent messages on the link's confirming channel and awaits the confirm."""

    def __init__(self, broker: Broker) -> None:
        self._broker = broker
        self._exchanges: dict[tuple[int, str], AbstractExchange] = {}

    async def publish(
        self,
        envelope: Envelope,
        *,
        routing_key: str,
        timeout: float,
        exchange: str | None = None,
        expiration: float | None = None,
    ) -> None:
        """Publish to `exchange` (default ingest, "" the default exchange) and await the confirm;
        BrokerUnavailable otherwise. The content type is always the envelope's: a body moved from
        one queue to another keeps its own (messages.py)."""
        channel, ingest = self._broker.confirming()
        message = aio_pika.Message(
            envelope.body,
            message_id=envelope.message_id,
            content_type=envelope.content_type,
            delivery_mode=aio_pika.DeliveryMode.PERSISTENT,
            timestamp=time.time(),
            headers=dict(envelope.headers),
            expiration=expiration,
        )
        try:
            async with asyncio.timeout(timeout):
                target = ingest
                if exchange == "":
                    target = channel.default_exchange
                elif exchange is not None:
                    target = await self._exchange(channel, exchange)
                await target.publish(message, routing_key=routing_key, mandatory=True)
        except TimeoutError:
            raise BrokerUnavailable("no confirm in time") from None
        except aio_pika.exceptions.DeliveryError as exc:
            # Nack (a queue refused it) or Return (unroutable): the logs must tell them apart.
            frame = type(getattr(exc, "frame", None)).__name__
            if frame == "Nack":
                self._broker.refused(channel)
            raise unavailable(f"publish refused ({frame})", exc) from None
        except _PUBLISH_ERRORS as exc:
            raise unavailable("publish failed", exc) from None

    async def _exchange(self, channel: AbstractChannel, name: str) -> AbstractExchange:
        # One object per exchange and channel, not per message (DLQ tools republish thousands);
        # not declared, as the ingest exchange: the topology is declared when the link opens.
        key = (id(channel), name)
        if key not in self._exchanges:
            self._exchanges = {k: v for k, v in self._exchanges.items() if k[0] == id(channel)}
            self._exchanges[key] = await channel.get_exchange(name, ensure=False)
        return self._exchanges[key]
