"""The queue message: one sealed share, as the gateway publishes and the worker stores it."""

from __future__ import annotations

import base64
import binascii

from pydantic import BaseModel, ConfigDict, Field, field_validator

from sharevault.crypto import Identity
from sharevault.schemas.common import BackupMethod, ClientId, PairIdStr

KINDS = ("custodian", "client")


class ShareMessage(BaseModel):
    """Never holds a share in clear: `sealed` is AES-GCM bound to the identity fields."""

    model_config = ConfigDict(extra="ignore", frozen=True)

    message_id: str = Field(min_length=1, max_length=64)
    # Gateway receive time in µs; ties broken by message_id. Newer wins, older never overwrites.
    version: int = Field(ge=0)
    kind: str = Field(pattern="^(custodian|client)$")
    client_id: ClientId
    backup_method: BackupMethod
    pair_id: PairIdStr
    sealed: str = Field(min_length=1, description="base64 of key_id ‖ nonce ‖ ciphertext")

    @field_validator("sealed")
    @classmethod
    def _is_base64(cls, value: str) -> str:
        try:
            base64.b64decode(value, validate=True)
        except (binascii.Error, ValueError):
            raise ValueError("sealed must be base64") from None
        return value

    @classmethod
    def build(
        cls, *, message_id: str, version: int, identity: Identity, sealed: bytes
    ) -> ShareMessage:
        return cls(
            message_id=message_id,
            version=version,
            kind=identity.kind,
            client_id=identity.client_id,
            backup_method=identity.backup_method,
            pair_id=identity.pair_id,
            sealed=base64.b64encode(sealed).decode(),
        )

    @property
    def sealed_bytes(self) -> bytes:
        return base64.b64decode(self.sealed)

    @property
    def identity(self) -> Identity:
        return Identity(self.kind, self.client_id, self.backup_method, self.pair_id)
