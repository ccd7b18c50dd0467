"""Bodies of the client (user) backup share endpoints (contract §2)."""

from __future__ import annotations

from typing import Any

from pydantic import BaseModel, ConfigDict, Field, field_validator, model_validator

from sharevault.schemas.common import (
    UNKNOWN_METHOD,
    BackupMethod,
    MethodOrUnknown,
    PairId,
    PairIdStr,
    ShareText,
)

SHARE_FIELDS = "backupShare, data.backupShare or cipherText"


def _blank_is_none(value: Any) -> Any:
    # PortalEx reads these with `||`: an empty string means "not given".
    return None if value == "" else value


class WrappedShare(BaseModel):
    """`{"data": {"backupShare"}}`, as Portal's axios example sends it."""

    model_config = ConfigDict(extra="ignore", frozen=True)

    backup_share: ShareText = Field(alias="backupShare")


class ClientBackup(BaseModel):
    """`POST …/clients/{clientId}/backup`: one of the three shapes seen in the wild."""

    model_config = ConfigDict(
        extra="ignore",
        populate_by_name=True,
        frozen=True,
        # Published as it is validated: exactly one of the three share fields.
        json_schema_extra={
            "oneOf": [
                {"required": ["backupShare"]},
                {"required": ["data"]},
                {"required": ["cipherText"]},
            ]
        },
    )

    backup_share: ShareText | None = Field(default=None, alias="backupShare")
    data: WrappedShare | None = None
    cipher_text: ShareText | None = Field(default=None, alias="cipherText")
    backup_method: MethodOrUnknown = Field(default=UNKNOWN_METHOD, alias="backupMethod")
    backup_share_pair_id: PairId = Field(default="", alias="backupSharePairId")

    @field_validator("backup_method", "backup_share_pair_id", mode="before")
    @classmethod
    def _blank(cls, value: Any) -> Any:
        return _blank_is_none(value)

    @model_validator(mode="after")
    def _exactly_one_share(self) -> ClientBackup:
        given = [s for s in (self.backup_share, self.data, self.cipher_text) if s is not None]
        if len(given) != 1:
            raise ValueError(f"exactly one of {SHARE_FIELDS} is required")
        return self

    @property
    def share_text(self) -> str:
        """The share exactly as sent, whichever shape carried it."""
        if self.data is not None:
            return self.data.backup_share
        text = self.backup_share if self.backup_share is not None else self.cipher_text
        if text is None:  # unreachable: the validator guarantees one
            raise ValueError(f"no {SHARE_FIELDS}")
        return text


class ClientBackupQuery(BaseModel):
    """`GET …/clients/{clientId}/backup?backupMethod=&backupSharePairId=`."""

    model_config = ConfigDict(extra="ignore", populate_by_name=True, frozen=True)

    backup_method: BackupMethod | None = Field(default=None, alias="backupMethod")
    backup_share_pair_id: PairIdStr | None = Field(default=None, alias="backupSharePairId")

    @field_validator("backup_method", "backup_share_pair_id", mode="before")
    @classmethod
    def _blank(cls, value: Any) -> Any:
        return _blank_is_none(value)


class ClientBackupAnswer(BaseModel):
    """The stored client backup share, exactly as the app sent it."""

    cipher_text: str = Field(alias="cipherText")
