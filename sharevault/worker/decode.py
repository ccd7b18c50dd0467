"""From a queue message to the row it stores: shared by the worker and `sharevault replay`."""

from __future__ import annotations

from sharevault.crypto import Keyring
from sharevault.schemas import ShareMessage
from sharevault.store import SealedRow


def open_message(body: bytes, keyring: Keyring) -> SealedRow:
    """The row to store; pydantic's ValidationError or DecryptError when it never could be."""
    message = ShareMessage.model_validate_json(body)
    sealed = message.sealed_bytes
    # Refuse to store what we could never serve back.
    keyring.open(sealed, message.identity)
    return SealedRow(
        message.identity,
        sealed,
        message.version,
        message.message_id,
        report_api=message.report_api,
        bearer_sealed=message.bearer_sealed_bytes,
    )
