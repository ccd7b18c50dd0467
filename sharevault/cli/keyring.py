"""`sharevault keys generate | status | rotate` (the rotation itself is ops/rotation.py);
`rotate-key` stays as a hidden alias of `keys rotate`."""

from __future__ import annotations

import json
import sys
import time
from typing import Any

import click
from tabulate import tabulate

from sharevault.cli.common import run_or_exit, settings_or_exit
from sharevault.config import parse_keyring
from sharevault.crypto import Keyring, generate_keyring_value
from sharevault.db import open_store
from sharevault.ops.rotation import KeyUse, RotationSummary, key_uses, not_current, rotate


@click.group()
def keys() -> None:
    """Encryption keyring tools: make a keyring, see what each key protects, rotate."""


def _key_id(_ctx: click.Context, _param: click.Parameter, value: str | None) -> str | None:
    """A key id the keyring parser takes back as it is (SHAREVAULT_ENCRYPTION_KEYS syntax)."""
    if value is None:
        return None
    try:
        [(parsed, _)] = parse_keyring(generate_keyring_value(value))
    except ValueError:
        parsed = None
    if parsed != value or any(c in value for c in ",: "):
        raise click.BadParameter(
            "a key id is 1-64 printable ASCII characters without ',', ':' or spaces"
        )
    return value


@keys.command("generate")
@click.option(
    "--key-id", default=None, callback=_key_id, help="Id of the new key (default: random)."
)
def keys_generate(key_id: str | None) -> None:
    """Print a fresh SHAREVAULT_ENCRYPTION_KEYS value (one new 256-bit key), nothing else.

    Needs no setting: it makes the first keyring, before any secret exists."""
    click.echo(generate_keyring_value(key_id))


def _counts() -> tuple[dict[str, dict[str, int]], Keyring]:
    settings = settings_or_exit("encryption_keys")
    keyring = Keyring(settings.keyring)

    async def count() -> dict[str, dict[str, int]]:
        async with open_store(settings.database_url.get_secret_value(), size=1) as store:
            return await store.key_counts()

    return run_or_exit(count), keyring


@keys.command("status")
@click.option("--json", "as_json", is_flag=True, help="Print JSON.")
def keys_status(as_json: bool) -> None:
    """How many stored shares and pending outbox bearers each key id protects.

    Exits 1 when some rows are sealed under a key id the keyring does not hold (they cannot be
    opened until that key is back in SHAREVAULT_ENCRYPTION_KEYS)."""
    counts, keyring = _counts()
    uses = key_uses(counts, keyring)
    strangers = [u for u in uses if not u.in_keyring]
    if as_json:
        click.echo(json.dumps({"current": keyring.current_id, "keys": [vars(u) for u in uses]}))
    else:
        _print_uses(uses)
    for use in strangers:
        click.echo(
            f"warning: {use.shares} share(s) and {use.bearers} outbox bearer(s) are sealed under "
            f"key id {use.key_id!r}, which is not in the keyring: they cannot be opened (put that "
            "key back into SHAREVAULT_ENCRYPTION_KEYS)",
            err=True,
        )
    if strangers:
        sys.exit(1)


def _print_uses(uses: list[KeyUse]) -> None:
    rows = [
        [
            u.key_id,
            "current" if u.current else ("in keyring" if u.in_keyring else "NOT IN KEYRING"),
            u.shares,
            u.bearers,
            u.legacy,
        ]
        for u in uses
    ]
    headers = ["key id", "state", "shares", "outbox bearers", "legacy seals"]
    click.echo(tabulate(rows, headers=headers))
    old = [
        u for u in uses if u.in_keyring and (u.legacy or (not u.current and u.shares + u.bearers))
    ]
    if old:
        ids = ", ".join(u.key_id for u in old)
        click.echo(
            f"\nrows under {ids} (another key, or the legacy seal format): run"
            " `sharevault keys rotate` to re-seal them"
        )


class _Bar:
    """click's progress bar (with ETA) on stderr; never runs past its length."""

    def __init__(self, total: int) -> None:
        self._left = total
        self._bar: Any = click.progressbar(
            length=total, label="re-wrapping", file=sys.stderr, show_eta=True, show_pos=True
        )

    def __enter__(self) -> _Bar:
        self._bar.__enter__()
        return self

    def __exit__(self, *exc: object) -> None:
        self._bar.__exit__(None, None, None)

    def advance(self, count: int) -> None:
        step = min(count, self._left)
        self._left -= step
        if step:
            self._bar.update(step)


@keys.command("rotate")
@click.option(
    "--batch-size",
    default=500,
    show_default=True,
    type=click.IntRange(1, 10_000),
    help="Rows per read and per (short) write transaction.",
)
@click.option("--dry-run", is_flag=True, help="Open every row to re-wrap, count, write nothing.")
@click.option("--json", "as_json", is_flag=True, help="Print the summary as JSON.")
def rotate_key(batch_size: int, dry_run: bool, as_json: bool) -> None:
    """Re-seal every share and pending outbox bearer under the current (first) key, online.

    Gateways and workers keep running: a row rewritten meanwhile is left to its newer write, and
    every write is a short transaction. Interrupted, it resumes where it stopped when run again.
    Exits 1 when rows are left under another key (unreadable, or written meanwhile by a process
    whose keyring still puts an older key first)."""
    settings = settings_or_exit("encryption_keys")
    keyring = Keyring(settings.keyring)
    started = time.monotonic()

    async def rotate_all() -> RotationSummary:
        async with open_store(settings.database_url.get_secret_value(), size=2) as store:
            total = sum(not_current(await store.key_counts(), keyring.current_tag))
            if total and not dry_run:
                click.echo(
                    f"re-wrapping {total} row(s) under key {keyring.current_id!r}; every gateway "
                    "and worker must already hold it in SHAREVAULT_ENCRYPTION_KEYS",
                    err=True,
                )
            with _Bar(total) as bar:
                return await rotate(
                    store, keyring, batch_size=batch_size, dry_run=dry_run, progress=bar
                )

    try:
        summary = run_or_exit(rotate_all, resumable=True)
    except KeyboardInterrupt:
        click.echo("\ninterrupted: run the command again, it resumes where it stopped", err=True)
        sys.exit(130)
    _report(summary, time.monotonic() - started, as_json)
    if summary.unreadable or (summary.remaining and not dry_run):
        sys.exit(1)


def _report(s: RotationSummary, seconds: float, as_json: bool) -> None:
    data = {
        "current_key": s.current_key,
        "dry_run": s.dry_run,
        "to_rewrap": {"shares": s.to_rewrap_shares, "outbox": s.to_rewrap_bearers},
        "rewrapped": {"shares": s.shares, "outbox": s.bearers},
        "busy_skipped": s.busy,
        "unreadable": {"shares": len(s.unreadable_shares), "outbox": len(s.unreadable_bearers)},
        "passes": s.passes,
        "remaining": s.remaining,
        "seconds": round(seconds, 3),
    }
    if as_json:
        click.echo(json.dumps(data))
        return
    verb = "would re-wrap" if s.dry_run else "re-wrapped"
    click.echo(
        f"{verb} {s.shares} share(s) and {s.bearers} outbox bearer(s) under key "
        f"{s.current_key!r} in {seconds:.1f}s ({s.passes} pass(es)); "
        f"{s.busy} skipped while busy or rewritten; {s.unreadable} unreadable"
        + ("" if s.dry_run else f"; {s.remaining} left under other keys")
    )
    if s.unreadable:
        click.echo(
            "unreadable rows are left as they are: `sharevault keys status` shows their key ids",
            err=True,
        )
    if s.remaining and not s.dry_run and s.remaining > s.unreadable:
        click.echo(
            "rows are still under other keys: busy all along, or written meanwhile by a gateway "
            "whose SHAREVAULT_ENCRYPTION_KEYS puts another key first; fix that, run it again",
            err=True,
        )


# The command's name before it joined `keys`: still accepted, no longer listed.
rotate_key_alias = click.Command(
    "rotate-key",
    callback=rotate_key.callback,
    params=rotate_key.params,
    help=rotate_key.help,
    hidden=True,
)
