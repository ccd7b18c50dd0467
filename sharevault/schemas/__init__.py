"""Pydantic models at the edges: HTTP bodies, the queue message, Portal's API."""

from sharevault.schemas.client import ClientBackup, ClientBackupAnswer, ClientBackupQuery
from sharevault.schemas.common import UNKNOWN_METHOD
from sharevault.schemas.errors import ErrorBody, ErrorDetail
from sharevault.schemas.health import HealthAnswer, ReadyAnswer
from sharevault.schemas.webhook import (
    AcceptedAnswer,
    WebhookBackup,
    WebhookFetch,
    WebhookFetchAnswer,
)

__all__ = [
    "UNKNOWN_METHOD",
    "AcceptedAnswer",
    "ClientBackup",
    "ClientBackupAnswer",
    "ClientBackupQuery",
    "ErrorBody",
    "ErrorDetail",
    "HealthAnswer",
    "ReadyAnswer",
    "WebhookBackup",
    "WebhookFetch",
    "WebhookFetchAnswer",
]
