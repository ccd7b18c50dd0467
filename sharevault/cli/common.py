"""What every command shares: settings or a one-line exit, one event loop run with a clean end on
outages, one-line usage errors, and times given on the command line."""

from __future__ import annotations

import asyncio
import sys
from collections.abc import Callable, Coroutine
from datetime import datetime
from typing import Any, NoReturn, TypeVar

import click

from sharevault.broker import BrokerUnavailable
from sharevault.config import ConfigError, OptionalSecret, Settings, load_settings
from sharevault.db import DATABASE_ERRORS, TRANSIENT_ERRORS
from sharevault.ops.times import parse_time

T = TypeVar("T")


def fail(message: str, code: int = 1) -> NoReturn:
    """End the command with one line on stderr."""
    click.echo(message, err=True)
    sys.exit(code)


def settings_or_exit(*required: OptionalSecret) -> Settings:
    """The settings with the secrets this command needs, or exit 2 with the line naming the bad
    or missing variable (never its value)."""
    try:
        return load_settings().require(*required)
    except ConfigError as exc:
        fail(str(exc), 2)


def run_or_exit(work: Callable[[], Coroutine[Any, Any, T]], *, resumable: bool = False) -> T:
    """The command's one event loop run; a database or broker that is not there ends the command
    with one line."""
    again = " (run the command again: it resumes where it stopped)" if resumable else ""
    try:
        return asyncio.run(work())
    except BrokerUnavailable as exc:
        fail(f"error: {exc}{again}")
    except TRANSIENT_ERRORS as exc:
        fail(f"error: database unavailable ({type(exc).__name__}){again}")
    except DATABASE_ERRORS as exc:
        # The class says what (e.g. UndefinedTableError: not migrated), never a value.
        fail(f"error: database refused ({type(exc).__name__}){again}")


class OneLineUsageError(click.ClickException):
    """A bad option value or command: one line on stderr, exit 2 (no usage block, no traceback)."""

    exit_code = 2


def one_line(exc: click.UsageError) -> click.ClickException:
    where = exc.ctx.command_path if exc.ctx is not None else "sharevault"
    return OneLineUsageError(f"{where}: {exc.format_message()}")


class OneLineGroup(click.Group):
    """A group whose usage errors, its subcommands' included, are one line each."""

    def make_context(
        self,
        info_name: str | None,
        args: list[str],
        parent: click.Context | None = None,
        **extra: Any,
    ) -> click.Context:
        try:
            return super().make_context(info_name, args, parent, **extra)
        except click.exceptions.NoArgsIsHelpError:
            raise
        except click.UsageError as exc:
            raise one_line(exc) from None

    def invoke(self, ctx: click.Context) -> Any:
        try:
            return super().invoke(ctx)
        except click.exceptions.NoArgsIsHelpError:
            raise
        except click.UsageError as exc:
            raise one_line(exc) from None


class TimeParam(click.ParamType[Any, datetime]):
    """An ISO 8601 time or an age (15m, 2h, 3d ago), as an aware UTC datetime."""

    name = "TIME"

    def convert(
        self, value: Any, param: click.Parameter | None, ctx: click.Context | None
    ) -> datetime:
        if isinstance(value, datetime):
            return value
        try:
            return parse_time(str(value))
        except ValueError as exc:
            self.fail(str(exc), param, ctx)


TIME = TimeParam()
