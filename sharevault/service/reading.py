"""Opening stored shares for an answer: what does not authenticate is never served, nor hidden."""

from __future__ import annotations

import logging

from sharevault.crypto import DecryptError, Identity, Keyring
from sharevault.db import StoredShare
from sharevault.metrics import DECRYPT_FAILURES
from sharevault.service.errors import ApiError

log = logging.getLogger(__name__)


def open_stored(keyring: Keyring, kind: str, client_id: str, stored: StoredShare) -> str:
    """The share text, bound to the row's identity, version and message id; 500 `undecryptable`
    (logged by message id and counted, never with the data) when it does not open: a share
    that is there but damaged must never look like one that is not there."""
    identity = Identity(kind, client_id, stored.backup_method, stored.pair_id)
    try:
        return keyring.open(stored.sealed, identity, stored.version, stored.message_id).decode()
    except DecryptError as exc:
        DECRYPT_FAILURES.inc()
        log.error("stored %s share of message %s does not open: %s", kind, stored.message_id, exc)
        raise ApiError(
            500,
            "undecryptable",
            "a stored share failed to authenticate and is not served; operators are alerted",
        ) from None
