"""Publish a backlog through sharevault's own broker client and coalescing, as the gateway would
(no worker): shares published together travel together, as many per message as the gateway's
settings let gather."""

from __future__ import annotations

import argparse
import asyncio
import json
import resource
import time

from bench.messages import backlog_identity, sealed_message
from bench.workload import make_shares
from sharevault.config import load_settings
from sharevault.crypto import Keyring
from sharevault.service.publishing import CLOSE_WAIT, Coalescer, Route, coalescing_of
from sharevault.wiring import broker_of


async def publish_backlog(count: int, identities: int, run_id: str, version_base: int) -> float:
    """Publish `count` sealed messages, `in_flight` at a time; return the seconds it took."""
    settings = load_settings()
    keyring = Keyring(settings.keyring)
    shares = make_shares(32, seed=5)
    in_flight = asyncio.Semaphore(64)
    failures: list[BaseException] = []

    # The composition root's constructor: the same queue arguments as deployed.
    broker = broker_of(settings, name="bench-backlog")
    async with broker:
        await broker.wait_ready(30)
        # The live route, as the gateway's while a worker consumes (no detour watch here).
        route = Route(broker.admin, broker.topology.shares)
        coalescer = Coalescer(broker.publisher, route, coalescing_of(settings))

        async def one(index: int) -> None:
            try:
                identity = backlog_identity(run_id, index, identities)
                message = sealed_message(
                    keyring, identity, shares[index % len(shares)], version_base + index
                )
                await coalescer.publish(message, timeout=30)
            except BaseException as exc:
                failures.append(exc)
                raise
            finally:
                in_flight.release()

        t0 = time.monotonic()
        tasks = set()
        for index in range(count):
            await in_flight.acquire()
            if failures:
                break
            task = asyncio.create_task(one(index))
            tasks.add(task)
            task.add_done_callback(tasks.discard)
        await asyncio.gather(*tasks, return_exceptions=True)
        await coalescer.close(CLOSE_WAIT)
        if failures:
            raise RuntimeError(f"backlog publish failed: {type(failures[0]).__name__}")
        return time.monotonic() - t0


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--count", type=int, required=True)
    parser.add_argument("--identities", type=int, required=True)
    parser.add_argument("--run-id", required=True)
    parser.add_argument("--version-base", type=int, required=True)
    args = parser.parse_args()
    seconds = asyncio.run(
        publish_backlog(args.count, args.identities, args.run_id, args.version_base)
    )
    usage = resource.getrusage(resource.RUSAGE_SELF)
    print(
        json.dumps(
            {
                "published": args.count,
                "seconds": round(seconds, 3),
                "cpu_s": round(usage.ru_utime + usage.ru_stime, 3),
            }
        )
    )


if __name__ == "__main__":
    main()
