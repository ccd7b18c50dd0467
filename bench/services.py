"""The processes under test: sharevault's own commands and the baseline programs."""

from __future__ import annotations

import os
from pathlib import Path

from bench.measure import Ctx
from bench.stack import Service, free_port, python


def gateway(
    ctx: Ctx, name: str, commit_wait: float, processes: int | None = None, role: str = "sv"
) -> Service:
    """`python -m sharevault serve` on a free port, as deployed (default logging), as
    SHAREVAULT_HTTP_PROCESSES = `processes` (default: BENCH_GATEWAY_PROCESSES, else the
    setting's default) processes; the probe follows the supervising process with its children."""
    extra = {"http_port": str(port := free_port()), "commit_wait": str(commit_wait)}
    if processes is None and os.environ.get("BENCH_GATEWAY_PROCESSES"):
        processes = int(os.environ["BENCH_GATEWAY_PROCESSES"])
    if processes is not None:
        extra["http_processes"] = str(processes)
    env = ctx.env.sharevault_env(role, **extra)
    return _in_tree(Service(name, python("-m", "sharevault", "serve"), env, ctx.logdir, port), role)


def worker(ctx: Ctx, name: str, role: str = "sv") -> Service:
    """`python -m sharevault work`."""
    return _in_tree(
        Service(name, python("-m", "sharevault", "work"), ctx.env.sharevault_env(role), ctx.logdir),
        role,
    )


def _in_tree(service: Service, role: str) -> Service:
    """Sharevault B runs the code of BENCH_AB_TREE (another checkout, e.g. a `git worktree` of
    the commit before a change) when it is set: an A/B of code in one run."""
    tree = os.environ.get("BENCH_AB_TREE")
    if role == "svb" and tree:
        service.cwd = Path(tree)
        service.env = {**service.env, "PYTHONPATH": tree}
    return service


def baseline_server(ctx: Ctx, module: str) -> Service:
    """`python -m bench.baselines.<module> --port N` against the naive design's database."""
    port = free_port()
    argv = python("-m", f"bench.baselines.{module}", "--port", str(port))
    return Service(module, argv, ctx.env.baseline_env("naive"), ctx.logdir, port)
