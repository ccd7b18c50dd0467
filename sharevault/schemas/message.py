"""The queue messages: one sealed share, or a batch of them coalesced by the gateway."""

from __future__ import annotations

import base64
import binascii
from collections.abc import Sequence
from typing import Annotated, Any

from pydantic import (
    BaseModel,
    BeforeValidator,
    ConfigDict,
    Field,
    PlainSerializer,
    model_validator,
)

from sharevault.crypto import Identity
from sharevault.schemas.common import BackupMethod, ClientId, PairIdStr

KINDS = ("custodian", "client")
BEARER_KIND = "bearer"
# A message of this content type carries several shares: {"shares": [ShareMessage, ...]}.
BATCH_CONTENT_TYPE = "application/vnd.sharevault.batch+json"
SINGLE_CONTENT_TYPE = "application/json"
# Header of a batch message: how many shares it carries (the worker sizes its batches by it).
SHARES_HEADER = "x-sharevault-shares"


def _decode_base64(value: Any) -> Any:
    # Decoded once, here: the model holds bytes, and JSON carries base64.
    if not isinstance(value, str):
        return value
    try:
        return base64.b64decode(value, validate=True)
    except (binascii.Error, ValueError):
        raise ValueError("must be base64") from None


def _encode_base64(value: bytes) -> str:
    return base64.b64encode(value).decode()


# Strict: only a base64 string validates (raw bytes never come from JSON).
Base64Bytes = Annotated[
    bytes,
    BeforeValidator(_decode_base64),
    PlainSerializer(_encode_base64, return_type=str),
]


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
    sealed: Base64Bytes = Field(min_length=1, description="key_id ‖ nonce ‖ ciphertext")
    # Client shares only: which Portal report to send once stored, and the client's bearer to
    # send it with, sealed under `bearer_identity` (custodian messages carry neither).
    report_api: str | None = Field(default=None, pattern="^(v2|v3)$")
    bearer_sealed: Base64Bytes | None = Field(default=None, min_length=1, repr=False)
    # Request id and trace context of the HTTP request that brought it (ids, never secrets);
    # a single message also has them as AMQP headers, a batch only here.
    context: dict[str, str] | None = Field(default=None, repr=False)

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
        context: dict[str, str] | None = None,
    ) -> ShareMessage:
        return cls(
            message_id=message_id,
            version=version,
            kind=identity.kind,
            client_id=identity.client_id,
            backup_method=identity.backup_method,
            pair_id=identity.pair_id,
            sealed=sealed,
            report_api=report_api,
            bearer_sealed=bearer_sealed,
            context=context or None,
        )

    def encode(self) -> bytes:
        """The message body: JSON, binary fields in base64, absent optional fields left out."""
        return self.model_dump_json(exclude_none=True).encode()

    @property
    def identity(self) -> Identity:
        return Identity(self.kind, self.client_id, self.backup_method, self.pair_id)


def encode_batch(items: Sequence[bytes]) -> bytes:
    """A batch body from already encoded messages (no second serialisation of each share)."""
    return b'{"shares":[' + b",".join(items) + b"]}"
