"""Read-only looks at the broker (queue counts, by passive declare only: nothing is ever
declared) and the exclusive lock of the DLQ tools."""

from __future__ import annotations

import asyncio
import contextlib
from typing import TYPE_CHECKING

import aiormq

from sharevault.broker.consuming import CLOSE_WAIT, BrokerUnavailable, unavailable

if TYPE_CHECKING:
    from sharevault.broker.connection import Broker

_ERRORS = (aiormq.exceptions.AMQPError, ConnectionError, RuntimeError, TimeoutError)


class Admin:
    """Counts and locks over the broker link, each on a short channel of its own."""

    def __init__(self, broker: Broker) -> None:
        self._broker = broker

    async def queue_counts(self, name: str) -> tuple[int, int] | None:
        """(messages ready, consumers) of a queue, None when it does not exist; BrokerUnavailable
        when the broker does not answer."""
        try:
            channel = await self._broker.plain_channel()
        except _ERRORS as exc:
            raise unavailable("broker link lost", exc) from None
        try:
            declared = await channel.queue_declare(name, passive=True)
        except aiormq.exceptions.ChannelNotFoundEntity:
            return None  # the broker closed this channel with its answer
        except _ERRORS as exc:
            raise unavailable("broker link lost", exc) from None
        finally:
            if not channel.is_closed:
                with contextlib.suppress(Exception):
                    async with asyncio.timeout(CLOSE_WAIT):
                        await channel.close()
        return int(declared.message_count or 0), int(declared.consumer_count or 0)

    async def queue_depth(self, name: str) -> int:
        """Messages ready in a queue (not counting unacked ones)."""
        counts = await self.queue_counts(name)
        if counts is None:
            raise BrokerUnavailable(f"queue {name} does not exist")
        return counts[0]

    async def hold_lock(self, name: str) -> None:
        """Own an exclusive queue as a mutex until the link's connection closes; raises when
        another holds it."""
        channel = await self._broker.plain_channel()
        try:
            await channel.queue_declare(name, exclusive=True, auto_delete=True)
        except aiormq.exceptions.ChannelLockedResource:
            raise BrokerUnavailable(f"{name} is held by another command") from None
