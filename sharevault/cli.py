"""The `sharevault` command: serve, work, migrate, keys."""

from __future__ import annotations

import asyncio
import logging
import sys

import click

from sharevault.config import ConfigError, Settings, load_settings, mask_url
from sharevault.crypto import generate_keyring_value


def _settings() -> Settings:
    try:
        return load_settings()
    except ConfigError as exc:
        click.echo(str(exc), err=True)
        sys.exit(2)


def _setup_logging(level: str) -> None:
    logging.basicConfig(
        level=level.upper(),
        stream=sys.stderr,
        format="%(asctime)s %(levelname)s %(name)s: %(message)s",
    )


@click.group()
@click.option("--log-level", default="INFO", show_default=True, help="Python logging level.")
def main(log_level: str) -> None:
    """sharevault: keeps Portal MPC wallet backup shares, durably and encrypted."""
    _setup_logging(log_level)


@main.command()
def migrate() -> None:
    """Create the database if needed and apply pending migrations (safe to run concurrently)."""
    from sharevault.store import ensure_database
    from sharevault.store import migrate as apply

    settings = _settings()
    dsn = settings.database_url.get_secret_value()

    async def go() -> list[str]:
        if await ensure_database(dsn):
            click.echo(f"created database {mask_url(settings.database_url)}", err=True)
        return await apply(dsn)

    applied = asyncio.run(go())
    click.echo(
        f"applied {len(applied)} migration(s): {', '.join(applied) or 'none pending'}", err=True
    )


@main.command()
def serve() -> None:
    """Run the gateway (HTTP) until SIGTERM/SIGINT."""
    from aiohttp import web

    from sharevault.service import create_app

    settings = _settings()
    logging.getLogger(__name__).info(
        "gateway on %s:%d, database %s",
        settings.http_host,
        settings.http_port,
        mask_url(settings.database_url),
    )
    web.run_app(create_app(settings), host=settings.http_host, port=settings.http_port, print=None)


@main.command()
def work() -> None:
    """Run a worker until SIGTERM/SIGINT; it finishes the batch in hand before exiting."""
    from sharevault.worker import run_worker

    settings = _settings()
    asyncio.run(run_worker(settings))


@main.group()
def keys() -> None:
    """Encryption keyring tools."""


@keys.command("generate")
@click.option("--key-id", default=None, help="Id of the new key (default: random).")
def keys_generate(key_id: str | None) -> None:
    """Print a fresh SHAREVAULT_ENCRYPTION_KEYS value (one new 256-bit key), nothing else."""
    click.echo(generate_keyring_value(key_id))
