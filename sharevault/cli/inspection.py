"""`sharevault stats`: a look at the figures that creates nothing (ops/stats.py gathers them)."""

from __future__ import annotations

import asyncio
import json
import sys

import click

from sharevault.cli.common import settings_or_exit
from sharevault.ops.stats import gather_stats, render


@click.command()
@click.option("--json", "as_json", is_flag=True, help="Print JSON.")
def stats(as_json: bool) -> None:
    """Shares by kind and method, queue depths and consumers, dead letters, outbox, journal.

    Exits 1 when the database or the broker could not be reached (the rest is still shown)."""
    settings = settings_or_exit()
    data = asyncio.run(gather_stats(settings))
    if as_json:
        click.echo(json.dumps(data))
    else:
        click.echo(render(data))
    for part, reason in data["errors"].items():
        click.echo(f"error: {part}: {reason}", err=True)
    if data["errors"]:
        sys.exit(1)
