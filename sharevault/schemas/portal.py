"""What we send to and read from Portal's REST API (contract §1 and §2)."""

from __future__ import annotations

from pydantic import BaseModel, ConfigDict, Field

STORED_STATUS = "STORED_CLIENT_BACKUP_SHARE"


class PortalClientInfo(BaseModel):
    """`GET /api/v3/clients/me`: only the id matters to us."""

    model_config = ConfigDict(extra="ignore", frozen=True)

    id: str = Field(min_length=1, max_length=255)


class StoredReportV3(BaseModel):
    """`PATCH /api/v3/clients/me/backup-share-pairs`."""

    model_config = ConfigDict(populate_by_name=True, frozen=True)

    status: str = STORED_STATUS
    backup_share_pair_ids: list[str] = Field(alias="backupSharePairIds", min_length=1)


class StoredReportV1(BaseModel):
    """`PUT /api/v1/clients/me/wallet/stored-client-backup-share`, without a method.

    What `portal.api.storedClientBackupShare(true)` of Portal's first SDKs sends (PortalSwift 1.x:
    body `["success": success]`): the report of a share the app stored without naming a method.
    """

    model_config = ConfigDict(frozen=True)

    success: bool = True


class StoredReportV2(BaseModel):
    """`PUT /api/v2/clients/me/wallet/stored-client-backup-share`."""

    model_config = ConfigDict(populate_by_name=True, frozen=True)

    success: bool = True
    backup_method: str = Field(alias="backupMethod")


class WebhookRegistration(BaseModel):
    """`POST /api/webhook` with the custodian API key."""

    model_config = ConfigDict(frozen=True)

    webhook: str
    secret: str = Field(repr=False)
