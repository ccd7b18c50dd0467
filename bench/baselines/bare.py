"""Baseline (a), the HTTP ceiling: an aiohttp handler that checks the secret, parses, says 200."""

from __future__ import annotations

import argparse
import hmac
import json
import os

from aiohttp import web

SECRET = web.AppKey("secret", bytes)


async def backup(request: web.Request) -> web.Response:
    given = request.headers.get("X-Webhook-Secret", "").encode()
    if not hmac.compare_digest(given, request.app[SECRET]):
        return web.json_response({"error": {"code": "unauthorized"}}, status=401)
    try:
        body = json.loads(await request.read())
        if not isinstance(body.get("clientId"), str) or "share" not in body:
            raise ValueError("missing fields")
    except (ValueError, AttributeError):
        return web.json_response({"error": {"code": "invalid_body"}}, status=422)
    return web.json_response({"status": "ok"})


async def healthz(_request: web.Request) -> web.Response:
    return web.json_response({"status": "ok"})


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--port", type=int, required=True)
    parser.add_argument("--root", default="/webhook")
    args = parser.parse_args()
    app = web.Application(client_max_size=1024 * 1024)
    app[SECRET] = os.environ["BENCH_SECRET"].encode()
    app.router.add_post(f"{args.root}/backup", backup)
    app.router.add_get("/readyz", healthz)
    web.run_app(app, host="127.0.0.1", port=args.port, print=None, access_log=None)


if __name__ == "__main__":
    main()
