"""Bodies of Portal's custodian webhooks (contract §1)."""

from __future__ import annotations

import json
from typing import Annotated, Any, Literal

from pydantic import BaseModel, ConfigDict, Field, field_validator

from sharevault.schemas.common import (
    MAX_SHARE_CHARS,
    UNKNOWN_METHOD,
    ClientId,
    MethodOrUnknown,
    PairId,
    ShareText,
)

ShareObject = Annotated[dict[str, Any], Field(min_length=1)]


def share_object_text(value: dict[str, Any]) -> str:
    """The JSON text of a share sent as an object, serialised as JSON.stringify would."""
    return json.dumps(value, separators=(",", ":"), ensure_ascii=False)


class WebhookBackup(BaseModel):
    """`POST {root}/backup`: one custodian backup share."""

    model_config = ConfigDict(extra="ignore", populate_by_name=True, frozen=True)

    client_id: ClientId = Field(alias="clientId")
    backup_method: MethodOrUnknown = Field(default=UNKNOWN_METHOD, alias="backupMethod")
    backup_share_pair_id: PairId = Field(default="", alias="backupSharePairId")
    # Opaque JSON text, stored byte for byte; legacy senders send an object instead.
    share: ShareText | ShareObject

    @field_validator("share")
    @classmethod
    def _object_fits(cls, value: str | dict[str, Any]) -> str | dict[str, Any]:
        if isinstance(value, dict):
            if len(share_object_text(value)) > MAX_SHARE_CHARS:
                raise ValueError(f"share must be at most {MAX_SHARE_CHARS} characters")
        return value

    @property
    def share_text(self) -> str:
        return self.share if isinstance(self.share, str) else share_object_text(self.share)


class WebhookFetch(BaseModel):
    """`POST {root}/backup/fetch`: which client's shares Portal wants."""

    model_config = ConfigDict(extra="ignore", populate_by_name=True, frozen=True)

    client_id: ClientId = Field(alias="clientId")


class WebhookFetchAnswer(BaseModel):
    """Every stored custodian share of the client; `backupShare` (newest) for legacy readers."""

    backup_shares: list[str] = Field(alias="backupShares")
    backup_share: str | None = Field(default=None, alias="backupShare")


class AcceptedAnswer(BaseModel):
    """What a successful write answers: durable in the queue, and whether already committed."""

    message_id: str = Field(alias="messageId")
    status: Literal["committed", "queued"] = Field(
        description="'committed' (stored in the database) or 'queued' (durable in the queue)"
    )
