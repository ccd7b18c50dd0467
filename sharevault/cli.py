"""The `sharevault` command: serve, work, migrate, register-webhook, keys."""

from __future__ import annotations

import asyncio
import logging
import os
import sys

import click
import uvloop

from sharevault import otel
from sharevault.config import Settings, mask_url
from sharevault.crypto import generate_keyring_value
from sharevault.logs import setup_logging
from sharevault.ops.cliutil import run_or_exit, settings_or_exit
from sharevault.ops.commands import dlq, replay
from sharevault.ops.keys import keys_status, rotate_key
from sharevault.ops.stats import stats


def _tracing(settings: Settings, service: str) -> None:
    if settings.otel and not otel.configure(service):
        logging.getLogger(__name__).warning(
            "SHAREVAULT_OTEL is set but the `otel` extra is not installed; no tracing"
        )


@click.group()
@click.option("--log-level", default="INFO", show_default=True, help="Python logging level.")
@click.option(
    "--log-format",
    type=click.Choice(["auto", "json", "text"]),
    default="auto",
    show_default=True,
    help="auto: JSON lines unless stderr is a terminal.",
)
def main(log_level: str, log_format: str) -> None:
    """sharevault: keeps Portal MPC wallet backup shares, durably and encrypted."""
    setup_logging(log_level, log_format)


@main.command()
@click.option("--status", is_flag=True, help="List each migration: applied, pending, edited.")
def migrate(status: bool) -> None:
    """Create the database if needed, verify applied migrations, apply pending ones (safe to run
    concurrently)."""
    from sharevault.db import MigrationError, ensure_database, migration_status
    from sharevault.db import migrate as apply

    settings = settings_or_exit()
    dsn = settings.database_url.get_secret_value()
    if status:
        states = run_or_exit(lambda: migration_status(dsn))
        for state in states:
            click.echo(f"{state.label:<32} {state.state:<8} {state.applied_at or ''}".rstrip())
        sys.exit(1 if any(s.state == "edited" for s in states) else 0)

    async def go() -> list[str]:
        if await ensure_database(dsn):
            click.echo(f"created database {mask_url(settings.database_url)}", err=True)
        return await apply(dsn)

    try:
        applied = run_or_exit(go)
    except MigrationError as exc:
        click.echo(f"error: {exc}", err=True)
        sys.exit(1)
    click.echo(
        f"applied {len(applied)} migration(s): {', '.join(applied) or 'none pending'}", err=True
    )


@main.command()
@click.option(
    "--access-log", is_flag=True, help="Log a line per request (off: it costs a tenth of the CPU)."
)
@click.option("--supervisor", type=int, default=None, hidden=True)
@click.pass_context
def serve(ctx: click.Context, access_log: bool, supervisor: int | None) -> None:
    """Run the gateway (HTTP) until SIGTERM/SIGINT, as SHAREVAULT_HTTP_PROCESSES processes."""
    # --supervisor PID (internal): this is one of the processes a `serve` of several started.
    from sharevault.service import create_app
    from sharevault.service.server import serve as serve_app
    from sharevault.service.supervisor import stop_with_supervisor

    settings = settings_or_exit("webhook_secret", "encryption_keys")
    logging_options: dict[str, str] = ctx.parent.params if ctx.parent is not None else {}
    level = logging_options.get("log_level", "INFO")
    fmt = logging_options.get("log_format", "auto")
    where = f"{settings.http_host}:{settings.http_port}, database {mask_url(settings.database_url)}"
    processes = gateway_processes(settings)
    if supervisor is None and processes > 1:
        options = ["--log-level", level, "--log-format", fmt]
        sys.exit(_serve_processes(processes, settings, where, options, access_log=access_log))
    if supervisor is None:
        logging.getLogger(__name__).info("gateway on %s", where)
    else:
        stop_with_supervisor(supervisor)
        setup_logging(level, fmt, with_pid=True)
    _tracing(settings, "sharevault-gateway")
    # uvloop: the event loop and socket writes are a third of the gateway's CPU per request.
    uvloop.run(
        serve_app(
            create_app(settings),
            settings.http_host,
            settings.http_port,
            reuse_port=supervisor is not None,
            access_log=access_log,
        )
    )


def gateway_processes(settings: Settings) -> int:
    """SHAREVAULT_HTTP_PROCESSES, or with 0 one per core available; one on a port the OS picks
    (several processes must share one known port)."""
    if settings.http_processes:
        return settings.http_processes
    return 1 if settings.http_port == 0 else max(1, len(os.sched_getaffinity(0)))


def _serve_processes(
    processes: int,
    settings: Settings,
    where: str,
    logging_options: list[str],
    *,
    access_log: bool,
) -> int:
    """Start `processes` gateway processes on the port and supervise them."""
    from sharevault.service.supervisor import run_processes

    if settings.http_port == 0:
        click.echo(
            "configuration error: SHAREVAULT_HTTP_PORT must be set (not 0) when "
            "SHAREVAULT_HTTP_PROCESSES is above 1",
            err=True,
        )
        return 2
    logging.getLogger(__name__).info("gateway on %s, in %d processes", where, processes)
    argv = [sys.executable, "-m", "sharevault", *logging_options, "serve"]
    argv += ["--supervisor", str(os.getpid()), *(["--access-log"] if access_log else [])]
    return run_processes(processes, argv, dict(os.environ))


@main.command()
def work() -> None:
    """Run a worker until SIGTERM/SIGINT; it finishes the batch in hand before exiting."""
    from sharevault.worker import run_worker

    settings = settings_or_exit("encryption_keys")
    _tracing(settings, "sharevault-worker")
    uvloop.run(run_worker(settings))


@main.command("register-webhook")
@click.option(
    "--url",
    "root_url",
    required=True,
    help="Webhook root Portal will call, e.g. https://custody.example.com/webhook.",
)
def register_webhook(root_url: str) -> None:
    """Register the webhook root and secret with Portal (needs SHAREVAULT_PORTAL_API_KEY)."""
    from urllib.parse import urlsplit

    from sharevault.portal import PortalClient, PortalError, PortalRejected, with_retries

    settings = settings_or_exit("webhook_secret", "portal_api_key")
    parts = urlsplit(root_url)
    if parts.scheme not in ("http", "https") or not parts.hostname:
        click.echo("--url must be an absolute http(s) URL", err=True)
        sys.exit(2)
    if parts.path.rstrip("/") != settings.webhook_root:
        click.echo(f"note: this gateway serves webhooks under {settings.webhook_root}", err=True)
    key = settings.secret("portal_api_key")
    secret = settings.secret("webhook_secret")

    def redact(text: str) -> str:
        # Portal might echo what it was sent: neither the key nor the secret is ever printed.
        for value in (key, secret):
            text = text.replace(value, "***")
        return text

    async def go() -> tuple[int, str]:
        async with PortalClient(settings.portal_api_url, timeout=settings.portal_timeout) as portal:
            answer = await with_retries(
                lambda: portal.register_webhook(key, root_url, secret), attempts=5, max_wait=30.0
            )
        return answer.status, answer.text

    try:
        status, text = asyncio.run(go())
    except PortalError as exc:
        kind = "refused" if isinstance(exc, PortalRejected) else "could not be reached for"
        click.echo(f"Portal {kind} the registration: {exc}", err=True)
        if exc.detail:
            click.echo(f"Portal answered: {redact(exc.detail)}", err=True)
        sys.exit(1)
    click.echo(f"Portal answered HTTP {status}: {redact(text) or '(empty body)'}")


@main.group()
def keys() -> None:
    """Encryption keyring tools."""


@keys.command("generate")
@click.option("--key-id", default=None, help="Id of the new key (default: random).")
def keys_generate(key_id: str | None) -> None:
    """Print a fresh SHAREVAULT_ENCRYPTION_KEYS value (one new 256-bit key), nothing else."""
    click.echo(generate_keyring_value(key_id))


# Outage recovery (docs/queues.md).
main.add_command(dlq)
main.add_command(replay)

# Key rotation and figures (docs/operations.md).
keys.add_command(keys_status)
main.add_command(rotate_key)
main.add_command(stats)
