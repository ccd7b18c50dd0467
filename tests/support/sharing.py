"""Queue messages made and published the way a gateway would, for tests that skip the HTTP side."""

from __future__ import annotations

import uuid

from sharevault.broker import Broker
from sharevault.config import Settings
from sharevault.crypto import Identity, Keyring
from sharevault.messages import SHARE_KEY, SINGLE_CONTENT_TYPE, Envelope, ShareMessage


def seal_message(
    settings: Settings, identity: Identity, share: bytes, version: int
) -> ShareMessage:
    """A queue message exactly as the gateway would publish it."""
    return ShareMessage.build(
        message_id=uuid.uuid4().hex,
        version=version,
        identity=identity,
        sealed=Keyring(settings.keyring).seal(share, identity),
    )


async def publish_junk(broker: Broker, message_id: str = "junk") -> None:
    """A message that is not what its content type says: the worker parks it, replay skips it."""
    junk = Envelope(b"{not json", message_id, {}, SINGLE_CONTENT_TYPE)
    await broker.publisher.publish(junk, routing_key=SHARE_KEY, timeout=5)


async def publish_share(broker: Broker, message: ShareMessage, timeout: float = 5) -> None:
    """Publish one share alone to the live route, with confirm (as an idle gateway would)."""
    await broker.publisher.publish(message.envelope(), routing_key=SHARE_KEY, timeout=timeout)
