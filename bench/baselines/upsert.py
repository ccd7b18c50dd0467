"""Baseline (d): raw batched asyncpg upserts, 100-row batches on 4 connections, for --seconds."""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import resource
import time

import asyncpg

from bench.baselines.rawsql import Row, upsert_rows
from bench.workload import make_shares

BATCH = 100
CONNECTIONS = 4


async def run(dsn: str, seconds: float, run_id: str) -> tuple[int, float]:
    sealed = [s.encode() + os.urandom(28) for s in make_shares(32, 5)]  # sealed-sized blobs
    written = [0] * CONNECTIONS
    conns = [await asyncpg.connect(dsn) for _ in range(CONNECTIONS)]
    try:
        t0 = time.monotonic()
        deadline = t0 + seconds

        async def writer(w: int) -> None:
            # Each connection overwrites only its own identities: no lock waits between them.
            while time.monotonic() < deadline:
                rows: list[Row] = []
                for _ in range(BATCH):
                    written[w] += 1
                    count = written[w]
                    # One write in ten overwrites an earlier identity, like the HTTP workload.
                    n = count // 10 if count % 10 == 0 else count
                    client = f"clup{run_id}w{w}n{n:09d}"
                    blob = sealed[count % len(sealed)]
                    rows.append(
                        (
                            "custodian",
                            client,
                            "GDRIVE",
                            "cp" + client,
                            blob,
                            "k",
                            count,
                            f"m{w}.{count}",
                        )
                    )
                await upsert_rows(conns[w], rows)

        await asyncio.gather(*(writer(w) for w in range(CONNECTIONS)))
        return sum(written), time.monotonic() - t0
    finally:
        for conn in conns:
            await conn.close()


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--seconds", type=float, required=True)
    parser.add_argument("--run-id", required=True)
    args = parser.parse_args()
    cpu0 = _cpu()
    rows, seconds = asyncio.run(run(os.environ["BENCH_DSN"], args.seconds, args.run_id))
    print(
        json.dumps({"rows": rows, "seconds": round(seconds, 3), "cpu_s": round(_cpu() - cpu0, 3)})
    )


def _cpu() -> float:
    usage = resource.getrusage(resource.RUSAGE_SELF)
    return usage.ru_utime + usage.ru_stime


if __name__ == "__main__":
    main()
