"""Publish a backlog through sharevault's own broker client, as the gateway would (no worker)."""

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
from sharevault.messages import SHARE_KEY
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

        async def one(index: int) -> None:
            try:
                identity = backlog_identity(run_id, index, identities)
                message = sealed_message(
                    keyring, identity, shares[index % len(shares)], version_base + index
                )
                await broker.publisher.publish(
                    message.envelope(), routing_key=SHARE_KEY, timeout=30
                )
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
