"""Queue messages made and published the way a gateway would, for tests that skip the HTTP side."""

from __future__ import annotations

import os
import uuid

from cryptography.hazmat.primitives.ciphers.aead import AESGCM

from sharevault.broker import Broker
from sharevault.config import Settings
from sharevault.crypto import Identity, Keyring
from sharevault.messages import SHARE_KEY, SINGLE_CONTENT_TYPE, Envelope, ShareMessage


def legacy_seal(key_id: str, key: bytes, plaintext: bytes, identity: Identity) -> bytes:
    """Sealed the way gateways did before seals bound version and message id: `len(kid) ‖ kid ‖
    nonce ‖ ciphertext`, bound to the identity alone."""
    nonce = os.urandom(12)
    ct = AESGCM(key).encrypt(nonce, plaintext, identity.associated_data())
    return bytes([len(key_id)]) + key_id.encode() + nonce + ct


def seal_message(
    settings: Settings, identity: Identity, share: bytes, version: int
) -> ShareMessage:
    """A queue message exactly as the gateway would publish it."""
    message_id = uuid.uuid4().hex
    return ShareMessage.build(
        message_id=message_id,
        version=version,
        identity=identity,
        sealed=Keyring(settings.keyring).seal(share, identity, version, message_id),
    )


async def publish_junk(broker: Broker, message_id: str = "junk") -> None:
    """A message that is not what its content type says: the worker parks it, replay skips it."""
    junk = Envelope(b"{not json", message_id, {}, SINGLE_CONTENT_TYPE)
    await broker.publisher.publish(junk, routing_key=SHARE_KEY, timeout=5)


async def publish_share(broker: Broker, message: ShareMessage, timeout: float = 5) -> None:
    """Publish one share alone to the live route, with confirm (as an idle gateway would)."""
    await broker.publisher.publish(message.envelope(), routing_key=SHARE_KEY, timeout=timeout)
