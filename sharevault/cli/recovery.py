"""`sharevault dlq list | show | replay | purge` and `sharevault replay`: outage recovery
(docs/queues.md); the passes themselves are ops/dlq.py and ops/replay.py."""

from __future__ import annotations

import asyncio
import json
import sys
from collections import Counter
from collections.abc import Callable
from datetime import datetime
from typing import Any

import click

from sharevault.cli.common import TIME, run_or_exit, settings_or_exit
from sharevault.db import open_store
from sharevault.ops.dlq import Action, DeadLetter, Selection, Sweep, sweep
from sharevault.ops.replay import ReplayRange, ReplaySummary, replay_journal
from sharevault.ops.times import show
from sharevault.wiring import broker_of, keyring_of


def _filters(command: Callable[..., Any]) -> Callable[..., Any]:
    options = [
        click.option("--client", "clients", multiple=True, help="Only this client id (repeat)."),
        click.option("--reason", "reasons", multiple=True, help="Only this reason (repeat)."),
        click.option("--id", "message_ids", multiple=True, help="Only this message id (repeat)."),
        click.option("--since", type=TIME, help="Last failure at or after (ISO time or 2h)."),
        click.option("--until", type=TIME, help="Last failure at or before (ISO time or 2h)."),
    ]
    for option in reversed(options):
        command = option(command)
    return command


def _selection(**given: Any) -> Selection:
    return Selection(
        clients=frozenset(given.get("clients") or ()),
        reasons=frozenset(given.get("reasons") or ()),
        message_ids=frozenset(given.get("message_ids") or ()),
        since=given.get("since"),
        until=given.get("until"),
    )


def _sweep(
    selection: Selection, action: Action, confirm: Callable[[Sweep], Selection | None] | None = None
) -> Sweep:
    """One pass over the DLQ in the command's one event loop run. `confirm` (purge) sees a first,
    keeping pass and answers what to act on (None: nothing); it asks in a thread, so the broker
    link stays alive while the operator reads."""
    settings = settings_or_exit()
    # Only replay and purge may declare the topology: a look never creates a queue.
    looking = action is Action.KEEP and confirm is None

    async def one_pass() -> Sweep:
        link = broker_of(settings, name="sharevault-dlq", robust=False, declare=not looking)
        async with link as broker:
            if looking and await broker.admin.queue_counts(broker.topology.dead) is None:
                return Sweep()  # no DLQ under this prefix: nothing was ever dead-lettered
            if confirm is None:
                return await sweep(broker, selection, action, timeout=settings.publish_timeout)
            preview = await sweep(broker, selection, Action.KEEP, timeout=settings.publish_timeout)
            _warn_incomplete(preview)
            chosen = await asyncio.to_thread(confirm, preview)
            if chosen is None:
                return Sweep()
            return await sweep(broker, chosen, action, timeout=settings.publish_timeout)

    result = run_or_exit(one_pass)
    _warn_incomplete(result)
    return result


def _warn_incomplete(result: Sweep) -> None:
    if not result.complete:
        click.echo(
            f"warning: the DLQ changed during the pass ({result.seen} of {result.total} "
            "messages seen); nothing was lost, run the command again",
            err=True,
        )


@click.group()
def dlq() -> None:
    """The dead-letter queue: messages that cannot be stored, with the reason why."""


@dlq.command("list")
@_filters
@click.option("--limit", default=50, show_default=True, help="Messages to list one by one.")
@click.option("--json", "as_json", is_flag=True, help="Print JSON.")
def dlq_list(limit: int, as_json: bool, **given: Any) -> None:
    """Counts by reason, then the selected messages (never their content)."""
    result = _sweep(_selection(**given), Action.KEEP)
    selected = Counter(letter.reason for letter in result.matched)
    if as_json:
        click.echo(
            json.dumps(
                {
                    "total": result.total,
                    "selected": len(result.matched),
                    "by_reason": dict(selected),
                    "messages": [m.as_json() for m in result.matched[:limit]],
                }
            )
        )
        return
    click.echo(f"{result.total} dead letters, {len(result.matched)} selected")
    for reason, count in selected.most_common():
        click.echo(f"  {reason:<28} {count:>8}")
    if result.matched and limit:
        click.echo(f"\n{'message id':<34} {'reason':<22} {'client':<26} {'tries':>5}  last failure")
        for letter in result.matched[:limit]:
            click.echo(_line(letter))


def _line(letter: DeadLetter) -> str:
    client = letter.client_id or "?"
    return (
        f"{letter.message_id:<34} {letter.reason:<22} {client:<26} {letter.attempts:>5}"
        f"  {show(letter.last_failure)}"
    )


@dlq.command("show")
@click.argument("message_id")
@click.option("--json", "as_json", is_flag=True, help="Print JSON.")
def dlq_show(message_id: str, as_json: bool) -> None:
    """Everything known about one dead letter: headers and identity, never the share."""
    result = _sweep(_selection(message_ids=[message_id]), Action.KEEP)
    if not result.matched:
        click.echo(f"no dead letter with id {message_id}", err=True)
        sys.exit(1)
    for letter in result.matched:
        data = letter.as_json()
        if as_json:
            click.echo(json.dumps(data))
            continue
        for key, value in data.items():
            click.echo(f"{key:>14}: {'-' if value is None else value}")


@dlq.command("replay")
@_filters
def dlq_replay(**given: Any) -> None:
    """Put the selected dead letters back on the work path (the backlog queue), idempotently."""
    result = _sweep(_selection(**given), Action.REPLAY)
    replayed = result.done[Action.REPLAY]
    click.echo(f"replayed {replayed} of {result.total} dead letters to the backlog queue")


@dlq.command("purge")
@_filters
@click.option("--yes", is_flag=True, help="Do not ask for confirmation.")
def dlq_purge(yes: bool, **given: Any) -> None:
    """Delete the selected dead letters for good (asks first unless --yes)."""
    selection = _selection(**given)

    def ask(preview: Sweep) -> Selection | None:
        if not preview.matched:
            click.echo("nothing to purge")
            return None
        reasons = Counter(letter.reason for letter in preview.matched)
        listed = ", ".join(f"{n} {r}" for r, n in reasons.most_common())
        click.confirm(f"purge {len(preview.matched)} dead letters ({listed})?", abort=True)
        # Only what was shown: a message that arrived since then is not purged unseen.
        ids = frozenset(letter.message_id for letter in preview.matched)
        return _selection(**{**given, "message_ids": ids})

    result = _sweep(selection, Action.DROP, confirm=None if yes else ask)
    if yes or result.total:
        click.echo(f"purged {result.done[Action.DROP]} of {result.total} dead letters")


@click.command()
@click.option("--since", type=TIME, required=True, help="Versions from (ISO time or age: 2h).")
@click.option("--until", type=TIME, help="Versions up to (default: now).")
@click.option("--client", help="Only this client id.")
@click.option("--batch-size", default=500, show_default=True, help="Rows per transaction.")
@click.option("--json", "as_json", is_flag=True, help="Print the summary as JSON.")
def replay(
    since: datetime, until: datetime | None, client: str | None, batch_size: int, as_json: bool
) -> None:
    """Re-feed storage from the ingest journal; replaying twice changes nothing."""
    settings = settings_or_exit("encryption_keys")
    bar = _Bar()

    async def replay_range() -> ReplaySummary:
        dsn = settings.database_url.get_secret_value()
        async with (
            broker_of(settings, name="sharevault-replay", robust=False) as broker,
            open_store(dsn, size=2) as store,
        ):
            selection = ReplayRange(since, until, client)
            return await replay_journal(
                broker,
                store,
                keyring_of(settings),
                selection,
                bar,
                batch_size=batch_size,
                max_skew=settings.max_clock_skew,
            )

    try:
        summary = run_or_exit(replay_range)
    finally:
        bar.close()
    data = {
        "read": summary.read,
        "applied": summary.applied,
        "already_current": summary.current,
        "skipped": summary.skipped,
        "not_selected": summary.not_selected,
    }
    if as_json:
        click.echo(json.dumps(data))
        return
    click.echo(
        f"journal replayed from {show(since)}: {summary.read} read, {summary.applied} applied, "
        f"{summary.current} already current, {summary.skipped} skipped (cannot be opened), "
        f"{summary.not_selected} not selected"
    )


class _Bar:
    """click's progress bar on stderr, opened once the journal says how much there is."""

    def __init__(self) -> None:
        self._bar: Any = None

    def start(self, total: int) -> None:
        self._bar = click.progressbar(length=total, label="replaying", file=sys.stderr)
        self._bar.__enter__()

    def advance(self, count: int) -> None:
        if self._bar is not None:
            self._bar.update(count)

    def close(self) -> None:
        if self._bar is not None:
            self._bar.__exit__(None, None, None)
            self._bar = None
