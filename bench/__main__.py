"""`python -m bench run [--smoke|--quick|--full]`: the whole comparison in one run, one machine."""

from __future__ import annotations

import asyncio
import json
import os
import platform
import shutil
import subprocess
import sys
import tempfile
import time
from dataclasses import asdict, replace
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import click

from bench import chart, curvechart, report
from bench.backlogs import raw_queue_baselines, raw_upsert, sharevault_drain
from bench.curve import run_curve
from bench.environment import (
    REPO,
    BenchEnv,
    ensure_python_deps,
    ensure_wrk,
    log,
    setting_overrides,
    variant_overrides,
)
from bench.hopbudget import run_hop_budget
from bench.measure import Ctx, disk_usage
from bench.plan import PLANS, Plan
from bench.procstat import Probe, cluster_cpu, find_by_comm, own_backends, postmaster_pid
from bench.systems import open_rate, run_bare, run_sharevault
from bench.workload import WORKLOADS, Request, make_shares, make_workload_shares, write_wrk_data
from bench.wrkdriver import have_wrk

ROLES = ["sv", "naive", "raw", *(["svb"] if variant_overrides() else [])]
# What `--only` may name: the phases of a run (all of them without it).
PHASES = ("bare", "curve", "hops", "accept", "drains")
# The one committed summary (bench/results/ is ignored); a full run rewrites it but its drills part.
SUMMARY = REPO / "bench" / "RESULTS.md"
DRILLS_PART = "\n## Drills"


def write_summary(res: dict[str, Any], table: str) -> None:
    """bench/RESULTS.md: run id, commit and tables of the latest full run (the README quotes it)."""
    old = SUMMARY.read_text() if SUMMARY.exists() else ""
    head = old[: old.index("## Benchmark")] if "## Benchmark" in old else "# Benchmark results\n\n"
    drills = old[old.index(DRILLS_PART) :] if DRILLS_PART in old else ""
    meta = res["meta"]
    run = f"## Benchmark\n\nRun **`{meta['stamp']}`** (commit `{meta['commit']}`).\n\n"
    SUMMARY.write_text(head + run + table + "\n" + drills)


def _meta(plan: Plan, stamp: str) -> dict[str, Any]:
    def git(*args: str) -> str:
        done = subprocess.run(["git", *args], cwd=REPO, capture_output=True, text=True, check=False)
        return done.stdout.strip()

    return {
        "stamp": stamp,
        "plan": plan.name,
        "plan_settings": asdict(plan),
        "cores": os.cpu_count(),
        "python": platform.python_version(),
        "commit": git("rev-parse", "--short", "HEAD"),
        "tree_dirty": bool(git("status", "--porcelain", "--", "sharevault")),
        "loadavg_start": os.getloadavg(),
        "setting_overrides": setting_overrides(),
        "variant_b": variant_overrides(),
    }


def _probe(env: BenchEnv) -> Probe:
    """Follow RabbitMQ, the whole PostgreSQL cluster, and our own backends plus its helpers."""
    probe = Probe()
    beams = find_by_comm("beam.smp")
    probe.follow("rabbitmq", lambda: beams)
    postmaster = postmaster_pid(env.data_directory)
    if postmaster is not None:
        databases = {env.database(role) for role in ROLES}
        probe.follow_scalar("postgres", lambda: cluster_cpu(postmaster))
        probe.follow("postgres_own", lambda: own_backends(postmaster, databases))
    else:
        log("postmaster not found: PostgreSQL CPU will read 0")
    probe.start()
    return probe


async def run(
    plan: Plan, outdir: Path, stamp: str, setup: bool, only: frozenset[str] = frozenset()
) -> dict[str, Any]:
    started = time.monotonic()

    def wanted(phase: str) -> bool:
        return not only or phase in only

    if setup:
        ensure_python_deps()
    if plan.use_wrk and not (ensure_wrk() if setup else have_wrk()):
        log("wrk unavailable: the Python closed loop finds the maximum instead")
        plan = replace(plan, use_wrk=False)
    env = BenchEnv()
    outdir.mkdir(parents=True, exist_ok=True)
    with tempfile.TemporaryDirectory(prefix="svbench-") as tmp:
        logdir = Path(tmp)
        log(f"run {env.run_id}: databases {env.database('*')}, queue prefix {env.prefix}")
        await env.setup(ROLES)
        probe = _probe(env)
        try:
            shares = make_shares(48)
            wrk_data = logdir / "wrk-data.lua"
            write_wrk_data(
                wrk_data, shares, run_id=env.run_id, url_path="/webhook/backup", secret=env.secret
            )
            ctx = Ctx(plan, env, probe, logdir, outdir, stamp, shares, wrk_data)
            ctx.env_roles = ROLES
            _workloads(ctx, logdir)
            res: dict[str, Any] = {"meta": _meta(plan, stamp), "systems": {}, "backlog": {}}
            ctx.results = res
            sample = Request("cl" + "0" * 22, "GDRIVE-SECP256K1", "cm" + "0" * 22, "", True)
            bodies = [len(replace(sample, share=share).body()) for share in shares]
            res["meta"]["share_body_bytes"] = {"min": min(bodies), "max": max(bodies)}
            systems = res["systems"]
            if wanted("bare"):
                systems["bare"] = await run_bare(ctx)
            if wanted("curve"):
                await _curve(ctx, res, accept=wanted("accept"))
            if wanted("hops"):
                res["hop_budget"] = await run_hop_budget(ctx)
            if wanted("drains"):
                await _drains(ctx, res)
            res["disk"] = {role: await disk_usage(env.dsn(role)) for role in ROLES}
        except BaseException:
            keep = outdir / f"{stamp}-logs"
            shutil.copytree(logdir, keep, ignore=shutil.ignore_patterns("*.lua"))
            log(f"run failed; process logs kept in {keep}")
            raise
        finally:
            probe.stop()
            await env.teardown(ROLES)
    res["meta"]["loadavg_end"] = os.getloadavg()
    res["meta"]["seconds"] = round(time.monotonic() - started, 1)
    res["targets"] = report.targets(res)
    res["capacity"] = report.capacity(res)
    res["capacity_notes"] = report.CAPACITY_NOTES
    return res


def _workloads(ctx: Ctx, logdir: Path) -> None:
    """The shares and wrk data of each workload of the curve."""
    for mode in WORKLOADS:
        ctx.mode_shares[mode] = make_workload_shares(mode, 48)
        ctx.mode_wrk_data[mode] = logdir / f"wrk-data-{mode}.lua"
        write_wrk_data(
            ctx.mode_wrk_data[mode],
            ctx.mode_shares[mode],
            run_id=ctx.env.run_id,
            url_path="/webhook/backup",
            secret=ctx.env.secret,
            mode=mode,
        )


async def _curve(ctx: Ctx, res: dict[str, Any], *, accept: bool) -> None:
    """Naive and sharevault end to end: the whole curve, both workloads, interleaved; the fresh
    workload's points give both designs' maximum and open loop as the other tables show them;
    then (`accept`) sharevault's profile, soak and storage-down runs."""
    res["curve"] = curve = await run_curve(ctx)
    fresh, systems = curve["workloads"]["fresh"], res["systems"]
    idle = curve["background_cpu_per_s"]
    systems["naive"] = {
        "background_cpu_per_s": idle,
        "max": fresh["naive"],
        "open": fresh["open"]["naive"],
    }
    ctx.open_rate = open_rate(ctx, fresh["naive"]["accepted_per_s"])
    sv = {
        "background_cpu_per_s": idle,
        "max": fresh["sharevault"],
        "open": fresh["open"]["sharevault"],
    }
    systems["sharevault"] = await run_sharevault(ctx, sv) if accept else sv


async def _drains(ctx: Ctx, res: dict[str, Any]) -> None:
    """The backlog drains (sharevault's, the raw queue baselines, the 1M one with --full)."""
    plan, systems = ctx.plan, res["systems"]
    res["backlog"]["sharevault"] = await sharevault_drain(
        ctx, plan.backlog, plan.backlog_identities
    )
    systems["raw"] = await raw_queue_baselines(ctx, plan.backlog, plan.backlog_identities)
    systems["raw_upsert"] = await raw_upsert(ctx)
    if plan.big_backlog:
        res["backlog"]["sharevault_big"] = await sharevault_drain(
            ctx, plan.big_backlog, plan.big_backlog // 10
        )


@click.group()
def main() -> None:
    """sharevault benchmark harness."""


@main.command("run")
@click.option("--smoke", "form", flag_value="smoke", help="Seconds; no wrk; what CI runs.")
@click.option("--quick", "form", flag_value="quick", help="A few minutes, smaller backlog.")
@click.option("--full", "form", flag_value="full", help="Adds the 1M drain and a 10-minute soak.")
@click.option("--out", type=click.Path(path_type=Path), default=REPO / "bench" / "results")
@click.option("--no-setup", is_flag=True, help="Do not install wrk or the bench extra.")
@click.option(
    "--only",
    default="",
    metavar="PHASES",
    help=f"Comma-separated phases to run (of {', '.join(PHASES)}); default: all.",
)
def run_command(form: str | None, out: Path, no_setup: bool, only: str) -> None:
    """Run every system and baseline; write <date>.json, .png and .md to --out."""
    plan = PLANS[form or "default"]
    phases = frozenset(p for p in only.split(",") if p)
    if phases - set(PHASES):
        raise click.BadParameter(f"unknown phase(s): {', '.join(sorted(phases - set(PHASES)))}")
    stamp = datetime.now(UTC).strftime("%Y-%m-%d-%H%M%S") + ("" if form is None else f"-{form}")
    setup = not no_setup and plan.name != "smoke"
    res = asyncio.run(run(plan, out, stamp, setup, phases))
    res["meta"]["only"] = sorted(phases)
    table = report.render(res)
    (out / f"{stamp}.json").write_text(json.dumps(res, indent=1, default=str) + "\n")
    (out / f"{stamp}.md").write_text(table + "\n")
    if plan.name == "full" and not phases:
        write_summary(res, table)
    curvechart.draw(res, out / f"{stamp}-curve.png")
    drawn = chart.draw(res, out / f"{stamp}.png")
    click.echo(table)
    click.echo(f"\nresults: {out / stamp}.json" + (f", chart {out / stamp}.png" if drawn else ""))
    if not drawn:
        log("matplotlib missing: no chart (pip install -e '.[bench]')")
    sys.stdout.flush()


if __name__ == "__main__":
    main()
