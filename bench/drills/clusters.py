"""Cluster drills (issue 16): a RabbitMQ node killed or stopped in a private 3-node cluster, a
PostgreSQL primary lost and its replica (synchronous or not) promoted, and both at once with the
processes spread over the nodes. The processes reach every node through one setting each:
SHAREVAULT_AMQP_URL lists the brokers, SHAREVAULT_DATABASE_URL is a multi-host DSN with
target_session_attrs=read-write."""

from __future__ import annotations

import asyncio
import json
import sys
import time
from collections.abc import Awaitable, Callable
from datetime import UTC, datetime
from typing import Any

import aiohttp

from bench.drills.drills import Drill, DrillContext
from sharevault.broker import Topology
from tests.support.environment import free_port
from tests.support.rabbitcluster import RabbitCluster, RabbitNode

# `replay --since` starts this long before the primary was lost: the asynchronous window is far
# shorter, and replaying more than needed changes nothing (versioned upserts).
REPLAY_MARGIN = 30.0
WRITES_AGAIN_TIMEOUT = 120.0


def _rabbit(ctx: DrillContext) -> RabbitCluster:
    assert ctx.stack.rabbit is not None, "a cluster drill needs the private RabbitMQ cluster"
    return ctx.stack.rabbit


async def _readyz(url: str) -> dict[str, Any]:
    async with (
        aiohttp.ClientSession(timeout=aiohttp.ClientTimeout(total=3)) as session,
        session.get(url + "/readyz") as resp,
    ):
        body: dict[str, Any] = await resp.json()
        return body


async def _until_ready(url: str, timeout: float = 90) -> None:
    """Poll a gateway's /readyz until it answers 200 (a process just started)."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        try:
            if (await _readyz(url))["status"] == "ready":
                return
        except (aiohttp.ClientError, TimeoutError, ValueError):
            pass
        await asyncio.sleep(0.2)
    raise RuntimeError(f"gateway {url} not ready")


async def _writes_again(ctx: DrillContext, since: float) -> float | None:
    """Seconds from `since` until a write sent after it comes back committed."""
    deadline = since + WRITES_AGAIN_TIMEOUT
    while time.monotonic() < deadline:
        if ctx.load.ledger.committed_sent_after(since):
            first = min(
                a.acked_at
                for i in ctx.load.ledger.identities.values()
                for a in i.acks
                if a.sent_at >= since and a.status == "committed"
            )
            return round(first - since, 1)
        await asyncio.sleep(0.1)
    return None


def _answers(ctx: DrillContext, start: float, end: float) -> dict[str, int]:
    _, by_status = ctx.load.ledger.slowest(start, end)
    return {str(s): n for s, n in sorted(by_status.items())}


def _node_at(rabbit: RabbitCluster, where: str | None) -> RabbitNode | None:
    return next((n for n in rabbit.nodes if n.node == where), None)


async def _all_members_online(rabbit: RabbitCluster, prefix: str, timeout: float = 120) -> float:
    """Seconds until every queue of `prefix` (quorum queues, the journal stream) has all its
    members online again: the node that came back caught up."""
    started = time.monotonic()
    while time.monotonic() - started < timeout:
        out = await asyncio.to_thread(
            rabbit.ctl, rabbit.nodes[0], "list_queues", "name", "online", "--quiet"
        )
        lines = [line for line in out.splitlines() if line.startswith(prefix)]
        if lines and all(all(n.name in line for n in rabbit.nodes) for line in lines):
            return round(time.monotonic() - started, 1)
        await asyncio.sleep(0.5)
    return float("nan")


async def rabbitmq_node_kill(ctx: DrillContext) -> None:
    """SIGKILL the node leading the live quorum queue; it stays down until recovery is measured."""
    rabbit = _rabbit(ctx)
    await ctx.more_acks(ctx.plan.between_acks)
    shares = Topology(ctx.stack.prefix).shares
    leader = await asyncio.to_thread(rabbit.leader, shares) or rabbit.nodes[0]
    gateway_on = (await _readyz(ctx.stack.url))["nodes"]["broker"]
    await ctx.requests_in_flight(ctx.plan.load.custodian_writers // 2)
    start = time.monotonic()
    await asyncio.to_thread(rabbit.kill_node, leader)
    ctx.end_fault()
    ctx.notes["killed"] = f"{leader.node} (leader of {shares})"
    ctx.notes["gateway_was_on_it"] = gateway_on == leader.node
    ctx.notes["writes_again_s"] = await _writes_again(ctx, start)
    await ctx.more_acks(ctx.plan.between_acks, timeout=WRITES_AGAIN_TIMEOUT)
    ctx.notes["answers_during"] = _answers(ctx, start, time.monotonic())
    ctx.notes["new_leader"] = getattr(await asyncio.to_thread(rabbit.leader, shares), "node", None)

    async def back() -> None:
        await asyncio.to_thread(rabbit.start_node, leader)
        ctx.notes["caught_up_after_restart_s"] = await _all_members_online(rabbit, ctx.stack.prefix)

    ctx.afterwards.append(back)


async def rabbitmq_node_stop(ctx: DrillContext) -> None:
    """Stop (cleanly) the node the gateway is on for NODE_DOWN seconds, then start it again."""
    rabbit = _rabbit(ctx)
    await ctx.more_acks(ctx.plan.between_acks)
    gateway_on = (await _readyz(ctx.stack.url))["nodes"]["broker"]
    node = _node_at(rabbit, gateway_on) or rabbit.nodes[0]
    start = time.monotonic()
    await asyncio.to_thread(rabbit.stop_node, node)
    ctx.notes["stopped"] = node.node
    ctx.notes["writes_again_s"] = await _writes_again(ctx, start)
    await asyncio.sleep(max(0.0, start + ctx.plan.node_down - time.monotonic()))
    ctx.notes["answers_during"] = _answers(ctx, start, time.monotonic())
    await asyncio.to_thread(rabbit.start_node, node)
    ctx.end_fault()
    ctx.notes["down_s"] = round(time.monotonic() - start, 1)
    ctx.notes["caught_up_after_restart_s"] = await _all_members_online(rabbit, ctx.stack.prefix)


async def _replay_since(ctx: DrillContext, since: float) -> dict[str, int]:
    """`sharevault replay --since <time> --json` as an operator would run it: its summary."""
    iso = datetime.fromtimestamp(since, UTC).isoformat()
    proc = await asyncio.create_subprocess_exec(
        sys.executable, "-m", "sharevault", "replay", "--since", iso, "--json",
        env=ctx.stack.env(),
        stdout=asyncio.subprocess.PIPE,
        stderr=asyncio.subprocess.PIPE,
    )  # fmt: skip
    out, err = await asyncio.wait_for(proc.communicate(), 300)
    if proc.returncode != 0:
        raise RuntimeError(f"replay failed ({proc.returncode}): {err.decode()[-500:]}")
    summary: dict[str, int] = json.loads(out.decode().strip().splitlines()[-1])
    return summary


async def _failover(ctx: DrillContext, *, replay: bool) -> float:
    """SIGKILL the primary under load, promote the replica after PROMOTE_AFTER; with `replay`,
    then `replay --since` the failover (less a margin). Returns the moment of the kill."""
    primary, replica = ctx.stack.cluster, ctx.stack.replica
    assert primary is not None and replica is not None, "a failover drill needs a replica"
    await ctx.more_acks(ctx.plan.between_acks)
    await ctx.requests_in_flight(ctx.plan.load.custodian_writers // 2)
    killed_wall, start = time.time(), time.monotonic()
    await asyncio.to_thread(primary.kill)
    ctx.stack.crashes.append(start)
    await asyncio.sleep(ctx.plan.promote_after)
    await asyncio.to_thread(replica.promote)
    ctx.end_fault()
    ctx.notes["promoted_after_s"] = round(time.monotonic() - start, 1)
    ctx.notes["writes_again_s"] = await _writes_again(ctx, start)
    if replay:
        summary = await _replay_since(ctx, killed_wall - REPLAY_MARGIN)
        ctx.notes["replay"] = summary
        ctx.notes["replay_brought_back"] = summary.get("applied", 0)
    ctx.notes["answers_during"] = _answers(ctx, start, time.monotonic())
    ctx.notes["database_node_after"] = (await _readyz(ctx.stack.url))["nodes"]["database"]
    return start


def postgres_failover(*, replay: bool) -> Callable[[DrillContext], Awaitable[None]]:
    async def inject(ctx: DrillContext) -> None:
        await _failover(ctx, replay=replay)

    return inject


async def spread(ctx: DrillContext) -> None:
    """Two gateways and three workers spread over the nodes (shuffled broker order); a RabbitMQ
    node and the PostgreSQL primary lost at once, the replica promoted."""
    rabbit = _rabbit(ctx)
    port = free_port()
    await ctx.stack.start_second_gateway(port)
    second = f"http://127.0.0.1:{port}"
    await _until_ready(second)
    await ctx.more_acks(ctx.plan.between_acks)
    on = [(await _readyz(u))["nodes"]["broker"] for u in (ctx.stack.url, second)]
    ctx.notes["gateways_on"] = on
    victim = _node_at(rabbit, on[0]) or rabbit.nodes[0]
    await asyncio.to_thread(rabbit.kill_node, victim)
    ctx.notes["killed"] = victim.node
    await _failover(ctx, replay=False)
    ctx.notes["second_gateway_after"] = (await _readyz(second))["status"]

    async def back() -> None:
        await asyncio.to_thread(rabbit.start_node, victim)

    ctx.afterwards.append(back)


CLUSTER_DRILLS = [
    Drill("rabbitmq-node-kill", "RabbitMQ node SIGKILL (queue leader)", rabbitmq_node_kill,
          rabbit_cluster=True, smoke=False),
    Drill("rabbitmq-node-stop", "RabbitMQ node stopped, back later", rabbitmq_node_stop,
          rabbit_cluster=True, smoke=False),
    Drill("postgres-failover-sync", "PostgreSQL failover (sync replica)",
          postgres_failover(replay=False), pg_replica="sync", smoke=False),
    Drill("postgres-failover-async", "PostgreSQL failover (async replica) + replay",
          postgres_failover(replay=True), pg_replica="async", smoke=False),
    Drill("spread", "2 gateways, 3 workers; a node of each engine lost", spread, workers=3,
          rabbit_cluster=True, pg_replica="sync", smoke=False),
]  # fmt: skip
