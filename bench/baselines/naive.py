"""Baseline (b), the naive design: an aiohttp handler that upserts straight into PostgreSQL.

One transaction per request, synchronous_commit on (the server's default), a pool of 16, the same
sealing and the same versioned-upsert rule as sharevault, no queue: 200 means committed.
"""

from __future__ import annotations

import argparse
import hmac
import json
import os
import time
import uuid
from collections.abc import AsyncIterator

import asyncpg
from aiohttp import web

from sharevault.config import parse_keyring
from sharevault.crypto import DecryptError, Identity, Keyring

SECRET = web.AppKey("secret", bytes)
KEYRING = web.AppKey("keyring", Keyring)
POOL = web.AppKey("pool", asyncpg.Pool)
DSN = web.AppKey("dsn", str)

UPSERT = """
INSERT INTO shares AS s
    (kind, client_id, backup_method, pair_id, sealed, key_id, version, message_id)
VALUES ('custodian', $1, $2, $3, $4, $5, $6, $7)
ON CONFLICT (kind, client_id, backup_method, pair_id) DO UPDATE
SET sealed = excluded.sealed, key_id = excluded.key_id, version = excluded.version,
    message_id = excluded.message_id, updated_at = now()
WHERE (excluded.version, excluded.message_id) > (s.version, s.message_id)
"""
FETCH = """
SELECT backup_method, pair_id, sealed FROM shares
WHERE kind = 'custodian' AND client_id = $1 ORDER BY version DESC
"""


def _authorised(request: web.Request) -> bool:
    given = request.headers.get("X-Webhook-Secret", "").encode()
    return hmac.compare_digest(given, request.app[SECRET])


async def backup(request: web.Request) -> web.Response:
    if not _authorised(request):
        return web.json_response({"error": {"code": "unauthorized"}}, status=401)
    try:
        body = json.loads(await request.read())
        client = body["clientId"]
        method = body.get("backupMethod") or "UNKNOWN"
        pair = body.get("backupSharePairId") or ""
        share = body["share"]
        if not isinstance(share, str):
            share = json.dumps(share, separators=(",", ":"))
    except (ValueError, KeyError, AttributeError, TypeError):
        return web.json_response({"error": {"code": "invalid_body"}}, status=422)
    keyring = request.app[KEYRING]
    identity = Identity("custodian", client, method, pair)
    version = time.time_ns() // 1000
    message_id = uuid.uuid4().hex
    sealed = keyring.seal(share.encode(), identity, version, message_id)
    await request.app[POOL].execute(
        UPSERT, client, method, pair, sealed, keyring.current_tag, version, message_id
    )
    return web.json_response({"status": "committed"})


async def fetch(request: web.Request) -> web.Response:
    if not _authorised(request):
        return web.json_response({"error": {"code": "unauthorized"}}, status=401)
    client = json.loads(await request.read())["clientId"]
    keyring = request.app[KEYRING]
    shares = []
    for row in await request.app[POOL].fetch(FETCH, client):
        identity = Identity("custodian", client, row["backup_method"], row["pair_id"])
        try:
            shares.append(keyring.unseal(row["sealed"], identity).plaintext.decode())
        except DecryptError:
            continue
    return web.json_response({"backupShares": shares})


async def readyz(_request: web.Request) -> web.Response:
    return web.json_response({"status": "ready"})


async def _pool(app: web.Application) -> AsyncIterator[None]:
    async with asyncpg.create_pool(app[DSN], min_size=16, max_size=16) as pool:
        app[POOL] = pool
        yield


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--port", type=int, required=True)
    parser.add_argument("--root", default="/webhook")
    args = parser.parse_args()
    app = web.Application(client_max_size=1024 * 1024)
    app[SECRET] = os.environ["BENCH_SECRET"].encode()
    app[KEYRING] = Keyring(parse_keyring(os.environ["BENCH_KEYS"]))
    app[DSN] = os.environ["BENCH_DSN"]
    app.cleanup_ctx.append(_pool)
    app.router.add_post(f"{args.root}/backup", backup)
    app.router.add_post(f"{args.root}/backup/fetch", fetch)
    app.router.add_get("/readyz", readyz)
    web.run_app(app, host="127.0.0.1", port=args.port, print=None, access_log=None)


if __name__ == "__main__":
    main()
