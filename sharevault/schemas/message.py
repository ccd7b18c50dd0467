"""The queue message: one sealed share, as the gateway publishes and the worker stores it."""

from __future__ import annotations

import base64
import binascii

from pydantic import BaseModel, ConfigDict, Field, field_validator, model_validator

from sharevault.crypto import Identity
from sharevault.schemas.common import BackupMethod, ClientId, PairIdStr

KINDS = ("custodian", "client")
BEARER_KIND = "bearer"


def _check_base64(value: str) -> str:
    try:
        base64.b64decode(value, validate=True)
    except (binascii.Error, ValueError):
        raise ValueError("must be base64") from None
    return value


def _b64(data: bytes | None) -> str | None:
    return None if data is None else base64.b64encode(data).decode()


def bearer_identity(identity: Identity) -> Identity:
    """Associated data of a sealed bearer: bound to its share, yet never opens as a share."""
    return Identity(BEARER_KIND, identity.client_id, identity.backup_method, identity.pair_id)


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
    # Client shares only: which Portal report to send once stored, and the client's bearer to
    # send it with, sealed under `bearer_identity` (custodian messages carry neither).
    report_api: str | None = Field(default=None, pattern="^(v2|v3)$")
    bearer_sealed: str | None = Field(default=None, min_length=1, repr=False)

    @field_validator("sealed", "bearer_sealed")
    @classmethod
    def _is_base64(cls, value: str | None) -> str | None:
        return None if value is None else _check_base64(value)

    @model_validator(mode="after")
    def _report_needs_bearer(self) -> ShareMessage:
        if (self.report_api is None) != (self.bearer_sealed is None):
            raise ValueError("report_api and bearer_sealed go together")
        if self.report_api is not None and self.kind != "client":
            raise ValueError("only client shares are reported to Portal")
        return self

    @classmethod
    def build(
        cls,
        *,
        message_id: str,
        version: int,
        identity: Identity,
        sealed: bytes,
        report_api: str | None = None,
        bearer_sealed: bytes | None = None,
    ) -> ShareMessage:
        return cls(
            message_id=message_id,
            version=version,
            kind=identity.kind,
            client_id=identity.client_id,
            backup_method=identity.backup_method,
            pair_id=identity.pair_id,
            sealed=base64.b64encode(sealed).decode(),
            report_api=report_api,
            bearer_sealed=_b64(bearer_sealed),
        )

    @property
    def sealed_bytes(self) -> bytes:
        return base64.b64decode(self.sealed)

    @property
    def bearer_sealed_bytes(self) -> bytes | None:
        return None if self.bearer_sealed is None else base64.b64decode(self.bearer_sealed)

    @property
    def identity(self) -> Identity:
        return Identity(self.kind, self.client_id, self.backup_method, self.pair_id)
