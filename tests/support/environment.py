"""Where the tests find PostgreSQL and RabbitMQ, the secrets and keys they use, and the environment
of a `sharevault` subprocess that shares a test's database and queues."""

from __future__ import annotations

import base64
import os
import socket
from pathlib import Path

import asyncpg

from sharevault.config import Settings

PG_ADMIN = os.environ.get("SHAREVAULT_TEST_PG", "postgresql://postgres@127.0.0.1:5432/postgres")
AMQP_URL = os.environ.get("SHAREVAULT_TEST_AMQP", "amqp://guest:guest@127.0.0.1:5672/")
SAMPLES = Path(__file__).parent.parent / "samples"
WEBHOOK_SECRET = "test-webhook-secret-0123456789"
PREVIOUS_SECRET = "test-previous-secret-9876543210"
KEY_A = base64.b64encode(b"A" * 32).decode()
KEY_B = base64.b64encode(b"B" * 32).decode()


def dsn_for(name: str) -> str:
    return PG_ADMIN.rsplit("/", 1)[0] + "/" + name


async def admin_sql(sql: str) -> None:
    """One statement on the cluster's admin database (CREATE / DROP DATABASE)."""
    conn = await asyncpg.connect(PG_ADMIN)
    try:
        await conn.execute(sql)
    finally:
        await conn.close()


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def secret_headers(secret: str = WEBHOOK_SECRET) -> dict[str, str]:
    return {"X-Webhook-Secret": secret, "Content-Type": "application/json"}


def process_env(settings: Settings, **extra: str) -> dict[str, str]:
    """The environment a `sharevault` subprocess needs to share this test's database and queues."""
    base = {k: v for k, v in os.environ.items() if not k.startswith("SHAREVAULT_")}
    return {
        **base,
        "SHAREVAULT_DATABASE_URL": settings.database_url.get_secret_value(),
        "SHAREVAULT_AMQP_URL": settings.amqp_url.get_secret_value(),
        "SHAREVAULT_AMQP_PREFIX": settings.amqp_prefix,
        "SHAREVAULT_AMQP_SHUFFLE": "true" if settings.amqp_shuffle else "false",
        "SHAREVAULT_WEBHOOK_SECRET": settings.secret("webhook_secret"),
        "SHAREVAULT_ENCRYPTION_KEYS": settings.secret("encryption_keys"),
        "SHAREVAULT_PORTAL_API_URL": settings.portal_api_url,
        **extra,
    }
