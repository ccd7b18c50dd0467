"""Baseline (e), the drain ceiling: raw aio-pika consume, 100-row asyncpg upserts, ack `multiple`.

Consumes exactly --expect messages of the gateway's shape, then prints when the first arrived and
when the last was acknowledged.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import resource
import time

import aio_pika
import asyncpg
import msgpack
from aio_pika.abc import AbstractIncomingMessage

from bench.baselines.rawsql import Row, upsert_rows

PREFETCH = 512
BATCH = 100
LINGER_S = 0.002


def _row(body: bytes) -> Row:
    doc = msgpack.unpackb(body)
    sealed = doc["sealed"]
    key_id = sealed[1 : 1 + sealed[0]].decode()
    return (
        doc["kind"],
        doc["client_id"],
        doc["backup_method"],
        doc["pair_id"],
        sealed,
        key_id,
        doc["version"],
        doc["message_id"],
    )


async def _next_batch(
    inbox: asyncio.Queue[AbstractIncomingMessage],
) -> list[AbstractIncomingMessage]:
    batch = [await inbox.get()]
    deadline = time.monotonic() + LINGER_S
    while len(batch) < BATCH:
        if not inbox.empty():
            batch.append(inbox.get_nowait())
            continue
        remaining = deadline - time.monotonic()
        if remaining <= 0:
            break
        try:
            batch.append(await asyncio.wait_for(inbox.get(), remaining))
        except TimeoutError:
            break
    return batch


async def drain(url: str, dsn: str, queue: str, expect: int) -> tuple[float, float]:
    connection = await aio_pika.connect(url)
    db = await asyncpg.connect(dsn)
    try:
        channel = await connection.channel()
        await channel.set_qos(prefetch_count=PREFETCH)
        source = await channel.get_queue(queue, ensure=False)
        inbox: asyncio.Queue[AbstractIncomingMessage] = asyncio.Queue()
        await source.consume(inbox.put, no_ack=False)
        done, first = 0, 0.0
        while done < expect:
            batch = await _next_batch(inbox)
            first = first or time.time()
            await upsert_rows(db, [_row(m.body) for m in batch])
            await batch[-1].ack(multiple=True)  # everything up to it is in this or an earlier batch
            done += len(batch)
        return first, time.time()
    finally:
        await db.close()
        await connection.close()


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--queue", required=True)
    parser.add_argument("--expect", type=int, required=True)
    args = parser.parse_args()
    started = time.time()
    first, last = asyncio.run(
        drain(os.environ["BENCH_AMQP"], os.environ["BENCH_DSN"], args.queue, args.expect)
    )
    usage = resource.getrusage(resource.RUSAGE_SELF)
    print(
        json.dumps(
            {
                "drained": args.expect,
                "started": started,
                "first": first,
                "last": last,
                "cpu_s": round(usage.ru_utime + usage.ru_stime, 3),
            }
        )
    )


if __name__ == "__main__":
    main()
