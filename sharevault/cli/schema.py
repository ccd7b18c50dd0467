"""`sharevault migrate [--status]`: the database schema."""

from __future__ import annotations

import sys

import click

from sharevault.cli.common import fail, run_or_exit, settings_or_exit
from sharevault.config import mask_url
from sharevault.db import MigrationError, ensure_database, migrate, migration_status


@click.command("migrate")
@click.option(
    "--status", is_flag=True, help="List each migration (applied, pending, edited); change nothing."
)
def migrate_command(status: bool) -> None:
    """Create the database if needed, verify the applied migrations, apply pending ones (safe to
    run concurrently).

    Refuses (exit 1, naming them) applied migrations whose file was edited since they ran."""
    settings = settings_or_exit()
    dsn = settings.database_url.get_secret_value()
    if status:
        states = run_or_exit(lambda: migration_status(dsn))
        for state in states:
            click.echo(f"{state.label:<32} {state.state:<8} {state.applied_at or ''}".rstrip())
        sys.exit(1 if any(s.state == "edited" for s in states) else 0)

    async def apply() -> list[str]:
        if await ensure_database(dsn):
            click.echo(f"created database {mask_url(settings.database_url)}", err=True)
        return await migrate(dsn)

    try:
        applied = run_or_exit(apply)
    except MigrationError as exc:
        fail(f"error: {exc}")
    click.echo(
        f"applied {len(applied)} migration(s): {', '.join(applied) or 'none pending'}", err=True
    )
