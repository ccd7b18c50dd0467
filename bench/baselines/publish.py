"""Baseline (c): raw aio-pika publish with confirms to a quorum queue, 64 messages in flight.

Publishes exactly --count messages of the gateway's shape; the queue it leaves is the backlog the
raw drain baseline consumes.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import resource
import time

import aio_pika

from bench.messages import RawTemplate, backlog_identity
from bench.workload import make_shares
from sharevault.config import parse_keyring
from sharevault.crypto import Keyring
from sharevault.messages import SINGLE_CONTENT_TYPE

IN_FLIGHT = 64


async def publish(url: str, queue: str, count: int, identities: int, run_id: str) -> float:
    template = RawTemplate(Keyring(parse_keyring(os.environ["BENCH_KEYS"])), make_shares(32, 5))
    connection = await aio_pika.connect(url)
    try:
        channel = await connection.channel(publisher_confirms=True)
        await channel.declare_queue(queue, durable=True, arguments={"x-queue-type": "quorum"})
        exchange = channel.default_exchange
        slots = asyncio.Semaphore(IN_FLIGHT)
        tasks: set[asyncio.Task[object]] = set()

        async def one(index: int) -> None:
            try:
                message_id, body = template.body(
                    backlog_identity(run_id, index, identities), index + 1, index
                )
                message = aio_pika.Message(
                    body,
                    message_id=message_id,
                    content_type=SINGLE_CONTENT_TYPE,
                    delivery_mode=aio_pika.DeliveryMode.PERSISTENT,
                )
                await exchange.publish(message, routing_key=queue)
            finally:
                slots.release()

        t0 = time.monotonic()
        for index in range(count):
            await slots.acquire()
            task = asyncio.create_task(one(index))
            tasks.add(task)
            task.add_done_callback(tasks.discard)
        results = await asyncio.gather(*tasks, return_exceptions=True)
        errors = [r for r in results if isinstance(r, BaseException)]
        if errors:
            raise RuntimeError(f"publish failed: {type(errors[0]).__name__}")
        return time.monotonic() - t0
    finally:
        await connection.close()


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--queue", required=True)
    parser.add_argument("--count", type=int, required=True)
    parser.add_argument("--identities", type=int, required=True)
    parser.add_argument("--run-id", required=True)
    args = parser.parse_args()
    cpu0 = _cpu()
    seconds = asyncio.run(
        publish(os.environ["BENCH_AMQP"], args.queue, args.count, args.identities, args.run_id)
    )
    print(
        json.dumps(
            {
                "published": args.count,
                "seconds": round(seconds, 3),
                "cpu_s": round(_cpu() - cpu0, 3),
            }
        )
    )


def _cpu() -> float:
    usage = resource.getrusage(resource.RUSAGE_SELF)
    return usage.ru_utime + usage.ru_stime


if __name__ == "__main__":
    main()
