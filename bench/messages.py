"""Queue messages for backlogs: exactly what the gateway publishes, or a cheap raw twin."""

from __future__ import annotations

import uuid

import msgpack

from sharevault.crypto import Identity, Keyring
from sharevault.messages import ShareMessage

BACKLOG_CLIENT = "clbk"


def backlog_identity(run_id: str, index: int, identities: int) -> Identity:
    """Message `index` of a backlog writes identity `index % identities`: later ones overwrite."""
    client = f"{BACKLOG_CLIENT}{run_id}n{index % identities:09d}"
    return Identity("custodian", client, "GDRIVE-SECP256K1", "cp" + client)


def sealed_message(keyring: Keyring, identity: Identity, share: str, version: int) -> ShareMessage:
    """A message as the gateway builds it: sealed, bound to its identity, versioned."""
    message_id = uuid.uuid4().hex
    return ShareMessage.build(
        message_id=message_id,
        version=version,
        identity=identity,
        sealed=keyring.seal(share.encode(), identity, version, message_id),
    )


class RawTemplate:
    """The gateway's wire format (a ShareMessage as MessagePack, SINGLE_CONTENT_TYPE) without
    per-message sealing: raw consumers do not open the seal."""

    def __init__(self, keyring: Keyring, shares: list[str]) -> None:
        probe = Identity("custodian", "x", "x", "x")
        self.sealed = [keyring.seal(s.encode(), probe, 0, "probe") for s in shares]

    def body(self, identity: Identity, version: int, index: int) -> tuple[str, bytes]:
        message_id = uuid.uuid4().hex
        doc = {
            "message_id": message_id,
            "version": version,
            "kind": identity.kind,
            "client_id": identity.client_id,
            "backup_method": identity.backup_method,
            "pair_id": identity.pair_id,
            "sealed": self.sealed[index % len(self.sealed)],
        }
        return message_id, msgpack.packb(doc)
