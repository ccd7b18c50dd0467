"""Queue-side figures: draining a backlog with sharevault's worker and with the raw baselines."""

from __future__ import annotations

import asyncio
import time
from typing import Any

import aio_pika
import asyncpg

from bench import sql
from bench.environment import AMQP_URL, log
from bench.measure import Ctx, costs, flatness, measured
from bench.services import worker
from bench.stack import Service, python
from sharevault.broker import Topology

DRAIN_PARTS = ["worker", "rabbitmq", "postgres"]


class QueueWatch:
    """One connection for polling queue depths (a connection per poll would cost the broker)."""

    def __init__(self) -> None:
        self._connection: aio_pika.abc.AbstractConnection | None = None
        self._channel: aio_pika.abc.AbstractChannel | None = None

    async def __aenter__(self) -> QueueWatch:
        self._connection = await aio_pika.connect(AMQP_URL)
        self._channel = await self._connection.channel()
        return self

    async def __aexit__(self, *exc: object) -> None:
        if self._connection is not None:
            await self._connection.close()

    async def ready(self, name: str) -> int:
        assert self._channel is not None
        queue = await self._channel.declare_queue(name, passive=True)
        return int(queue.declaration_result.message_count or 0)

    async def purge(self, name: str) -> None:
        assert self._channel is not None
        queue = await self._channel.declare_queue(name, passive=True)
        await queue.purge()


def share_queues(prefix: str) -> list[str]:
    """Queues holding shares not yet stored: the live queue, and the backlog queue where the
    topology has one (messages not taken within the live TTL move there)."""
    topology = Topology(prefix)
    backlog = getattr(topology, "backlog", None)
    return [topology.shares, *([backlog] if isinstance(backlog, str) else [])]


async def pending(watch: QueueWatch, prefix: str) -> int:
    """Ready messages of every share-bearing queue (not counting those a worker holds)."""
    return sum([await watch.ready(name) for name in share_queues(prefix)])


async def queue_ready(ctx: Ctx) -> int:
    async with QueueWatch() as watch:
        return await pending(watch, ctx.env.prefix)


async def settled_pending(ctx: Ctx, count: int, timeout: float = 30) -> int:
    """Pending messages once they stop moving (expired live messages dead-letter to the backlog
    asynchronously, so for a moment they are in neither queue)."""
    started = time.monotonic()
    last = -1
    async with QueueWatch() as watch:
        while True:
            now = await pending(watch, ctx.env.prefix)
            elapsed = time.monotonic() - started
            if now >= count or (now == last and elapsed > 2) or elapsed > timeout:
                return now
            last = now
            await asyncio.sleep(0.5)


async def purge_shares(ctx: Ctx) -> None:
    async with QueueWatch() as watch:
        for name in share_queues(ctx.env.prefix):
            await watch.purge(name)


async def sharevault_drain(ctx: Ctx, count: int, identities: int) -> dict[str, Any]:
    """Publish `count` messages with no worker running, then start one and time the drain."""
    # Newer than anything stored before (written earlier, by this host's clock), yet never ahead
    # of it: a worker dead-letters (`tampered`) a version beyond now + MAX_CLOCK_SKEW. One µs per
    # message: publishing them takes far longer than `count` µs.
    version_base = time.time_ns() // 1000
    publisher = Service(
        f"backlog-publish-{count}",
        python(
            "-m",
            "bench.backlog",
            "--count",
            str(count),
            "--identities",
            str(identities),
            "--run-id",
            ctx.env.run_id,
            "--version-base",
            str(version_base),
        ),
        ctx.env.sharevault_env("sv"),
        ctx.logdir,
    ).start()
    log(f"sharevault backlog: publishing {count:,} shares (no worker)")
    published, pub_window = await measured(ctx, publisher.result(timeout=3600))
    ready = await settled_pending(ctx, count)
    log(f"sharevault backlog: {ready:,} messages ready; starting the worker")
    wk = worker(ctx, f"worker-drain-{count}").start()
    ctx.probe.follow_pid("worker", wk.pid)
    threshold = version_base + count - identities
    try:
        timing, window = await measured(ctx, _watch_drain(ctx, wk, ready, identities, threshold))
    finally:
        ctx.probe.forget("worker")
        await wk.stop()
    series = [
        (round(t - window.t0, 2), mb)
        for t, mb in ctx.probe.series["worker"]
        if window.t0 <= t <= window.t1
    ]
    return {
        "messages": count,
        "identities": identities,
        "ready_before": ready,
        "publish": {**published, "rabbitmq_cpu_s": pub_window.cpu.get("rabbitmq", 0.0)},
        "seconds_from_start": timing["from_start"],
        "seconds_from_first": timing["from_first"],
        "rate_from_start": round(count / timing["from_start"], 1),
        "rate_from_first": round(count / timing["from_first"], 1),
        **costs(window, DRAIN_PARTS, count),
        "worker_rss_mb": series,
        "worker_rss_flatness": flatness(series),
    }


async def _watch_drain(
    ctx: Ctx, wk: Service, ready_before: int, identities: int, threshold: int
) -> dict[str, float]:
    """From the worker's start: first delivery (ready drops below the `ready_before` messages
    queued: a message carries up to PUBLISH_BATCH shares), then every final version stored."""
    started = time.monotonic()
    first = 0.0
    async with QueueWatch() as watch:
        conn = await asyncpg.connect(ctx.env.dsn("sv"))
        try:
            while True:
                wk.check_alive()
                ready = await pending(watch, ctx.env.prefix)
                now = time.monotonic()
                if not first and ready < ready_before:
                    first = now
                if ready == 0 and await conn.fetchval(sql.FINAL_ROUND, threshold) >= identities:
                    return {
                        "from_start": round(max(now - started, 0.001), 3),
                        "from_first": round(max(now - (first or started), 0.001), 3),
                    }
                # Poll finely until the first delivery, then gently (each poll costs CPU too).
                await asyncio.sleep(0.25 if first else 0.02)
        finally:
            await conn.close()


async def raw_queue_baselines(ctx: Ctx, count: int, identities: int) -> dict[str, Any]:
    """(c) raw publish with confirms of `count` messages, then (e) their raw drain."""
    env = ctx.env.baseline_env("raw")
    pub = Service(
        "raw-publish",
        python(
            "-m",
            "bench.baselines.publish",
            "--queue",
            ctx.env.raw_queue,
            "--count",
            str(count),
            "--identities",
            str(identities),
            "--run-id",
            ctx.env.run_id,
        ),
        env,
        ctx.logdir,
    ).start()
    log(f"raw aio-pika publish with confirms: {count:,} messages")
    published, pub_window = await measured(ctx, pub.result(timeout=3600))
    publish = {
        **published,
        "rate": round(count / published["seconds"], 1),
        "rabbitmq_cpu_s": pub_window.cpu.get("rabbitmq", 0.0),
        "cpu_s_per_1000": {
            "publisher": round(published["cpu_s"] / count * 1000, 4),
            "rabbitmq": round(pub_window.cpu.get("rabbitmq", 0.0) / count * 1000, 4),
        },
    }
    drainer = Service(
        "raw-drain",
        python("-m", "bench.baselines.drain", "--queue", ctx.env.raw_queue, "--expect", str(count)),
        env,
        ctx.logdir,
    ).start()
    log("raw consume + batched upsert: draining it")
    drained, window = await measured(ctx, drainer.result(timeout=3600))
    from_first = drained["last"] - drained["first"]
    from_start = drained["last"] - drained["started"]
    cpu = {k: window.cpu.get(k, 0.0) for k in ("rabbitmq", "postgres", "postgres_own")}
    cpu["consumer"] = drained["cpu_s"]
    return {
        "publish": publish,
        "drain": {
            "messages": count,
            "seconds_from_start": round(from_start, 3),
            "seconds_from_first": round(from_first, 3),
            "rate_from_start": round(count / from_start, 1),
            "rate_from_first": round(count / from_first, 1),
            "cpu_s": cpu,
            "cpu_s_per_1000": {k: round(v / count * 1000, 4) for k, v in cpu.items()},
        },
    }


async def raw_upsert(ctx: Ctx) -> dict[str, Any]:
    """(d) 100-row batched upserts on 4 connections."""
    job = Service(
        "raw-upsert",
        python(
            "-m",
            "bench.baselines.upsert",
            "--seconds",
            str(ctx.plan.raw_upsert_s),
            "--run-id",
            ctx.env.run_id,
        ),
        ctx.env.baseline_env("raw"),
        ctx.logdir,
    ).start()
    log(f"raw batched asyncpg upserts: {ctx.plan.raw_upsert_s:.0f} s")
    done, window = await measured(ctx, job.result(timeout=600))
    rows = done["rows"]
    cpu = {
        "writer": done["cpu_s"],
        "postgres": window.cpu.get("postgres", 0.0),
        "postgres_own": window.cpu.get("postgres_own", 0.0),
    }
    return {
        **done,
        "rate": round(rows / done["seconds"], 1),
        "cpu_s": cpu,
        "cpu_s_per_1000": {k: round(v / rows * 1000, 4) for k, v in cpu.items()},
    }
