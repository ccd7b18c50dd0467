"""The `sharevault` command: click groups over the package, each command one event loop run.

serve, work (processes.py) · migrate (schema.py) · register-webhook (registration.py) ·
keys generate | status | rotate (keyring.py) · stats (inspection.py) · dlq, replay (recovery.py)."""

from __future__ import annotations

import click

from sharevault.cli.common import OneLineGroup
from sharevault.cli.inspection import stats
from sharevault.cli.keyring import keys, rotate_key_alias
from sharevault.cli.processes import gateway_processes, serve, work
from sharevault.cli.recovery import dlq, replay
from sharevault.cli.registration import register_webhook
from sharevault.cli.schema import migrate_command
from sharevault.logs import setup_logging

LOG_LEVELS = ("DEBUG", "INFO", "WARNING", "ERROR", "CRITICAL")


@click.group(cls=OneLineGroup)
@click.version_option(package_name="sharevault", message="%(prog)s %(version)s")
@click.option(
    "--log-level",
    type=click.Choice(LOG_LEVELS, case_sensitive=False),
    default="INFO",
    show_default=True,
    help="Python logging level.",
)
@click.option(
    "--log-format",
    type=click.Choice(["auto", "json", "text"]),
    default="auto",
    show_default=True,
    help="auto: JSON lines unless stderr is a terminal.",
)
def main(log_level: str, log_format: str) -> None:
    """sharevault: keeps Portal MPC wallet backup shares, durably and encrypted."""
    setup_logging(log_level.upper(), log_format)


for command in (
    migrate_command,
    serve,
    work,
    register_webhook,
    keys,
    stats,
    dlq,
    replay,
    rotate_key_alias,
):
    main.add_command(command)

__all__ = ["gateway_processes", "main"]
