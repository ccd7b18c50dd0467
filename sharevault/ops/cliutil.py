"""What the operator commands share: settings or a one-line exit, and a clean end on outages."""

from __future__ import annotations

import asyncio
import sys
from collections.abc import Callable, Coroutine
from typing import Any, TypeVar

import click

from sharevault.config import ConfigError, OptionalSecret, Settings, load_settings

T = TypeVar("T")


def settings_or_exit(*required: OptionalSecret) -> Settings:
    """The settings with the secrets this command needs, or exit 2 with the line naming the bad
    or missing variable (never its value)."""
    try:
        return load_settings().require(*required)
    except ConfigError as exc:
        click.echo(str(exc), err=True)
        sys.exit(2)


def run_or_exit(work: Callable[[], Coroutine[Any, Any, T]], *, resumable: bool = False) -> T:
    """Run a coroutine; a database or broker that is not there ends the command with one line."""
    from sharevault.broker import BrokerUnavailable
    from sharevault.db import DATABASE_ERRORS, TRANSIENT_ERRORS

    again = " (run the command again: it resumes where it stopped)" if resumable else ""
    try:
        return asyncio.run(work())
    except BrokerUnavailable as exc:
        click.echo(f"error: {exc}{again}", err=True)
        sys.exit(1)
    except TRANSIENT_ERRORS as exc:
        click.echo(f"error: database unavailable ({type(exc).__name__}){again}", err=True)
        sys.exit(1)
    except DATABASE_ERRORS as exc:
        # The class says what (e.g. UndefinedTableError: not migrated), never a value.
        click.echo(f"error: database refused ({type(exc).__name__}){again}", err=True)
        sys.exit(1)
