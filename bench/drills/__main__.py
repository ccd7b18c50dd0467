"""`python -m bench.drills [--full] [--only DRILL]…`: fault drills, invariants checked."""

from __future__ import annotations

import asyncio
import json
import logging
import shutil
import sys
import tempfile
import time
from dataclasses import asdict
from datetime import UTC, datetime
from pathlib import Path

import click

from bench.drills.clusters import CLUSTER_DRILLS
from bench.drills.drills import DRILLS as BASIC_DRILLS
from bench.drills.drills import PLANS, Drill
from bench.drills.load import SHARE_MARK
from bench.drills.report import leaks, meta, table
from bench.drills.runner import DrillResult, Run

DRILLS = [*BASIC_DRILLS, *CLUSTER_DRILLS]
RESULTS = Path(__file__).resolve().parents[1] / "results"


def say(message: str) -> None:
    print(f"[drills] {message}", file=sys.stderr, flush=True)


async def run_all(plan: str, drills: list[Drill], logdir: Path) -> tuple[list[DrillResult], Run]:
    results = []
    async with Run(PLANS[plan], logdir) as run:
        for drill in drills:
            say(f"{drill.slug}: {drill.name} …")
            result = await run.drill(drill)
            verdict = "invariants hold" if result.holds else f"BROKEN: {result.problems[:3]}"
            recovered = "" if result.recover_s is None else f", recovered in {result.recover_s}s"
            say(f"{drill.slug}: {result.acknowledged} acknowledged{recovered}, {verdict}")
            for exit_ in result.unplanned_exits:
                say(f"{drill.slug}: unplanned exit (restarted): {exit_}")
            results.append(result)
    return results, run


@click.command()
@click.option("--full", "plan", flag_value="full", help="Long outages (30 s, 60 s), more kills.")
@click.option("--smoke", "plan", flag_value="smoke", default=True, help="Seconds each (CI).")
@click.option("--only", multiple=True, type=click.Choice([d.slug for d in DRILLS]))
@click.option("--out", type=click.Path(path_type=Path), default=RESULTS, show_default=True)
@click.option("--logs", type=click.Path(path_type=Path), help="Keep process logs here.")
def main(plan: str, only: tuple[str, ...], out: Path, logs: Path | None) -> None:
    """Run the drills; print the table; write drills-<date>.json (and .md) to --out."""
    logging.basicConfig(level=logging.WARNING, format="%(levelname)s %(name)s: %(message)s")
    drills = [d for d in DRILLS if d.slug in only] if only else DRILLS
    if plan == "smoke" and not only:
        drills = [d for d in drills if d.smoke]
    stamp = datetime.now(UTC).strftime("%Y-%m-%d-%H%M%S") + ("" if plan == "full" else f"-{plan}")
    logdir = logs or Path(tempfile.mkdtemp(prefix="svdrills-"))
    logdir.mkdir(parents=True, exist_ok=True)
    started = time.monotonic()
    results, run = asyncio.run(run_all(plan, drills, logdir))
    found = leaks(logdir, [*run.secrets.values(), *run.tokens, SHARE_MARK])
    document = {
        "meta": meta(plan, stamp, time.monotonic() - started),
        "drills": [asdict(r) for r in results],
        "leaks": found,
    }
    out.mkdir(parents=True, exist_ok=True)
    rendered = table(results)
    (out / f"drills-{stamp}.json").write_text(json.dumps(document, indent=1) + "\n")
    (out / f"drills-{stamp}.md").write_text(rendered + "\n")
    click.echo(rendered)
    click.echo(f"\nresults: {out / f'drills-{stamp}.json'}")
    failed = found or not all(r.holds for r in results)
    if found:
        say(f"LEAK: sensitive values in process logs: {found}")
    if logs is None and failed:
        kept = out / f"drills-{stamp}-logs"
        shutil.copytree(logdir, kept)
        say(f"process logs kept in {kept}")
    if logs is None:
        shutil.rmtree(logdir, ignore_errors=True)
    sys.exit(1 if failed else 0)


if __name__ == "__main__":
    main()
