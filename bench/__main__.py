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

from bench import chart, report
from bench.backlogs import raw_queue_baselines, raw_upsert, sharevault_drain
from bench.curve import run_curve
from bench.environment import REPO, BenchEnv, ensure_python_deps, ensure_wrk, log
from bench.hopbudget import run_hop_budget
from bench.measure import Ctx, disk_usage
from bench.plan import PLANS, Plan
from bench.procstat import Probe, cluster_cpu, find_by_comm, own_backends, postmaster_pid
from bench.systems import open_rate, run_bare, run_sharevault
from bench.workload import WORKLOADS, Request, make_shares, make_workload_shares, write_wrk_data
from bench.wrkdriver import have_wrk

ROLES = ["sv", "naive", "raw"]


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


async def run(plan: Plan, outdir: Path, stamp: str, setup: bool) -> dict[str, Any]:
    started = time.monotonic()
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
            for mode in WORKLOADS:
                ctx.mode_shares[mode] = make_workload_shares(mode, 48)
                ctx.mode_wrk_data[mode] = logdir / f"wrk-data-{mode}.lua"
                write_wrk_data(
                    ctx.mode_wrk_data[mode],
                    ctx.mode_shares[mode],
                    run_id=env.run_id,
                    url_path="/webhook/backup",
                    secret=env.secret,
                    mode=mode,
                )
            res: dict[str, Any] = {"meta": _meta(plan, stamp), "systems": {}, "backlog": {}}
            ctx.results = res
            sample = Request("cl" + "0" * 22, "GDRIVE-SECP256K1", "cm" + "0" * 22, "", True)
            bodies = [len(replace(sample, share=share).body()) for share in shares]
            res["meta"]["share_body_bytes"] = {"min": min(bodies), "max": max(bodies)}
            systems = res["systems"]
            systems["bare"] = await run_bare(ctx)
            # Naive and sharevault end to end: the whole curve, both workloads, interleaved.
            res["curve"] = curve = await run_curve(ctx)
            fresh = curve["workloads"]["fresh"]
            idle = curve["background_cpu_per_s"]
            systems["naive"] = {
                "background_cpu_per_s": idle,
                "max": fresh["naive"],
                "open": fresh["open"]["naive"],
            }
            ctx.open_rate = open_rate(ctx, fresh["naive"]["accepted_per_s"])
            measured_sv = {"background_cpu_per_s": idle, "max": fresh["sharevault"]}
            measured_sv["open"] = fresh["open"]["sharevault"]
            systems["sharevault"] = await run_sharevault(ctx, measured_sv)
            res["hop_budget"] = await run_hop_budget(ctx)
            res["backlog"]["sharevault"] = await sharevault_drain(
                ctx, plan.backlog, plan.backlog_identities
            )
            systems["raw"] = await raw_queue_baselines(ctx, plan.backlog, plan.backlog_identities)
            systems["raw_upsert"] = await raw_upsert(ctx)
            if plan.big_backlog:
                res["backlog"]["sharevault_big"] = await sharevault_drain(
                    ctx, plan.big_backlog, plan.big_backlog // 10
                )
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


@click.group()
def main() -> None:
    """sharevault benchmark harness."""


@main.command("run")
@click.option("--smoke", "form", flag_value="smoke", help="Seconds; no wrk; what CI runs.")
@click.option("--quick", "form", flag_value="quick", help="A few minutes, smaller backlog.")
@click.option("--full", "form", flag_value="full", help="Adds the 1M drain and a 10-minute soak.")
@click.option("--out", type=click.Path(path_type=Path), default=REPO / "bench" / "results")
@click.option("--no-setup", is_flag=True, help="Do not install wrk or the bench extra.")
def run_command(form: str | None, out: Path, no_setup: bool) -> None:
    """Run every system and baseline; write <date>.json, .png and .md to --out."""
    plan = PLANS[form or "default"]
    stamp = datetime.now(UTC).strftime("%Y-%m-%d-%H%M%S") + ("" if form is None else f"-{form}")
    res = asyncio.run(run(plan, out, stamp, setup=not no_setup and plan.name != "smoke"))
    table = report.render(res)
    (out / f"{stamp}.json").write_text(json.dumps(res, indent=1, default=str) + "\n")
    (out / f"{stamp}.md").write_text(table + "\n")
    drawn = chart.draw(res, out / f"{stamp}.png")
    click.echo(table)
    click.echo(f"\nresults: {out / stamp}.json" + (f", chart {out / stamp}.png" if drawn else ""))
    if not drawn:
        log("matplotlib missing: no chart (pip install -e '.[bench]')")
    sys.stdout.flush()


if __name__ == "__main__":
    main()
