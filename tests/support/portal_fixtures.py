"""Shared pieces of the client-share and report-back tests: tokens, fast settings, waiting."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

from sharevault.config import Settings
from tests.support import FakePortal
from tests.support.environment import process_env

PORTAL_API_KEY = "test-custodian-api-key-5f1d0c9e7a"
TOKEN_A = "client-a-session-token-6b2e9d4f1a8c"
TOKEN_B = "client-b-session-token-0c7f3a5e2d91"
CLIENT_A = "clA0000000000000000000001"
CLIENT_B = "clB0000000000000000000002"
SENSITIVE = (PORTAL_API_KEY, TOKEN_A, TOKEN_B)
# Retries fast enough for tests; the schedule's shape is what is under test, not its size.
FAST = {
    "outbox_poll_interval": 0.05,
    "outbox_backoff_initial": 0.05,
    "outbox_backoff_max": 0.3,
    "portal_timeout": 3.0,
    "outbox_lease": 4.0,
}


def portal_settings(
    settings_factory: Callable[..., Settings], fake: FakePortal, **overrides: Any
) -> Settings:
    """Settings pointing at the fake Portal, with a fast outbox."""
    return settings_factory(**{"portal_api_url": fake.url, **FAST, **overrides})


def register_clients(fake: FakePortal) -> None:
    fake.add_client(TOKEN_A, CLIENT_A)
    fake.add_client(TOKEN_B, CLIENT_B)


def bearer(token: str) -> dict[str, str]:
    return {"Authorization": f"Bearer {token}"}


def worker_env(settings: Settings) -> dict[str, str]:
    """The environment of a `python -m sharevault work` subprocess for these settings."""
    names = (*FAST, "outbox_horizon")
    return process_env(
        settings, **{f"SHAREVAULT_{n.upper()}": str(getattr(settings, n)) for n in names}
    )
