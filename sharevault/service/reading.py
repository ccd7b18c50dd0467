"""Opening stored shares for an answer: what does not authenticate is never served."""

from __future__ import annotations

import logging

from sharevault.crypto import DecryptError, Identity, Keyring
from sharevault.db import StoredShare
from sharevault.metrics import DECRYPT_FAILURES

log = logging.getLogger(__name__)


def open_stored(keyring: Keyring, kind: str, client_id: str, stored: StoredShare) -> str | None:
    """The share text, or None (logged and counted, without the data) when it fails to open."""
    identity = Identity(kind, client_id, stored.backup_method, stored.pair_id)
    try:
        return keyring.open(stored.sealed, identity).decode()
    except DecryptError:
        DECRYPT_FAILURES.inc()
        log.error(
            "stored %s share failed to decrypt: client %s method %s (message %s)",
            kind,
            client_id,
            stored.backup_method,
            stored.message_id,
        )
        return None
