"""A fake Portal API on a real socket: whoami, both reports, webhook registration, faults."""

# Run it alone with `python -m tests.support.fake_portal --port N`; `/_fake/*` drives it then.

from __future__ import annotations

import argparse
import asyncio
import contextlib
import hashlib
import hmac
import json
import time
from collections.abc import Awaitable, Callable
from dataclasses import asdict, dataclass, field
from typing import Any

from aiohttp import web

from sharevault.portal import REPORT_V1, REPORT_V2, REPORT_V3, WEBHOOK, WHOAMI
from sharevault.schemas.portal import STORED_STATUS

Handler = Callable[[web.Request], Awaitable[web.StreamResponse]]


def _digest(secret: str) -> str:
    return hashlib.sha256(secret.encode()).hexdigest()


@dataclass(frozen=True)
class Call:
    """One request the fake received; tokens and secrets appear only as whose they were."""

    method: str
    path: str
    status: int
    client_id: str | None
    body: Any
    delivered: bool
    at: float
    request_id: str | None = None


@dataclass
class Fault:
    status: int
    times: int | None
    retry_after: str | None
    path: str


@dataclass
class FakePortal:
    """Portal's API as sharevault uses it, with switches for 429/5xx/slow answers."""

    api_key: str | None = None
    host: str = "127.0.0.1"
    port: int = 0
    delay: float = 0.0
    calls: list[Call] = field(default_factory=list)
    # Paths in order of arrival, recorded before any delay or fault: "the request got here".
    arrivals: list[str] = field(default_factory=list)
    webhooks: list[dict[str, str]] = field(default_factory=list)
    _clients: dict[str, str] = field(default_factory=dict)
    _faults: list[Fault] = field(default_factory=list)
    _runner: web.AppRunner | None = None
    _wake: asyncio.Event = field(default_factory=asyncio.Event)

    # --- switches -------------------------------------------------------------------------------

    def add_client(self, token: str, client_id: str) -> None:
        """Portal will say `token` belongs to `client_id` (only its hash is kept)."""
        self._clients[_digest(token)] = client_id

    def fail(
        self,
        status: int = 503,
        *,
        times: int | None = None,
        retry_after: float | str | None = None,
        path: str = "",
    ) -> None:
        """Answer `status` to requests for `path` (all: ""), `times` times or until heal()."""
        after = None if retry_after is None else str(retry_after)
        self._faults.append(Fault(status, times, after, path))

    def heal(self) -> None:
        """No more faults or delay; slow answers in progress are released now."""
        self._faults.clear()
        self.delay = 0.0
        self._wake.set()
        self._wake = asyncio.Event()

    # --- what happened --------------------------------------------------------------------------

    def reports(self, *, ok_only: bool = True) -> list[Call]:
        """Report-back calls (v3, v2, v1); by default only those answered 2xx and delivered."""
        return [
            c
            for c in self.calls
            if c.path in (REPORT_V3, REPORT_V2, REPORT_V1)
            and (not ok_only or (200 <= c.status < 300 and c.delivered))
        ]

    def calls_to(self, path: str) -> list[Call]:
        return [c for c in self.calls if c.path == path]

    # --- server ---------------------------------------------------------------------------------

    @property
    def url(self) -> str:
        return f"http://{self.host}:{self.port}"

    def app(self) -> web.Application:
        app = web.Application(middlewares=[self._middleware])
        app.router.add_get(WHOAMI, self._whoami)
        app.router.add_patch(REPORT_V3, self._report_v3)
        app.router.add_put(REPORT_V2, self._report_v2)
        app.router.add_put(REPORT_V1, self._report_v1)
        app.router.add_post(WEBHOOK, self._register_webhook)
        app.router.add_post("/_fake/clients", self._control_client)
        app.router.add_post("/_fake/faults", self._control_fault)
        app.router.add_delete("/_fake/faults", self._control_heal)
        app.router.add_get("/_fake/calls", self._control_calls)
        return app

    async def start(self) -> FakePortal:
        self._runner = web.AppRunner(self.app(), access_log=None, shutdown_timeout=1.0)
        await self._runner.setup()
        await web.TCPSite(self._runner, self.host, self.port).start()
        self.port = int(self._runner.addresses[0][1])
        return self

    async def close(self) -> None:
        if self._runner is not None:
            self._wake.set()
            await self._runner.cleanup()
            self._runner = None

    async def __aenter__(self) -> FakePortal:
        return await self.start()

    async def __aexit__(self, *exc: object) -> None:
        await self.close()

    # --- behaviour ------------------------------------------------------------------------------

    def _fault_for(self, path: str) -> Fault | None:
        for fault in self._faults:
            if fault.path in ("", path):
                if fault.times is not None:
                    fault.times -= 1
                    if fault.times <= 0:
                        self._faults.remove(fault)
                return fault
        return None

    def _caller(self, request: web.Request) -> str | None:
        scheme, _, token = request.headers.get("Authorization", "").partition(" ")
        return self._clients.get(_digest(token.strip())) if scheme.lower() == "bearer" else None

    @web.middleware
    async def _middleware(self, request: web.Request, handler: Handler) -> web.StreamResponse:
        if request.path.startswith("/_fake/"):
            return await handler(request)
        self.arrivals.append(request.path)
        raw = await request.read()
        if self.delay:
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(self._wake.wait(), self.delay)
        fault = self._fault_for(request.path)
        if fault is not None:
            headers = {"Retry-After": fault.retry_after} if fault.retry_after else None
            resp: web.StreamResponse = web.json_response(
                {"error": "fake fault"}, status=fault.status, headers=headers
            )
        else:
            resp = await handler(request)
        transport = request.transport
        self.calls.append(
            Call(
                request.method,
                request.path,
                resp.status,
                self._caller(request),
                _loggable(request.path, raw),
                transport is not None and not transport.is_closing(),
                time.monotonic(),
                request.headers.get("X-Request-Id"),
            )
        )
        return resp

    async def _whoami(self, request: web.Request) -> web.Response:
        client_id = self._caller(request)
        if client_id is None:
            return web.json_response({"error": "Unauthorized"}, status=401)
        return web.json_response({"id": client_id, "environment": {"name": "fake"}})

    async def _report_v3(self, request: web.Request) -> web.Response:
        if self._caller(request) is None:
            return web.json_response({"error": "Unauthorized"}, status=401)
        body = await _json(request)
        ids = body.get("backupSharePairIds")
        if body.get("status") != STORED_STATUS or not ids or not isinstance(ids, list):
            return web.json_response({"error": "bad body"}, status=400)
        return web.json_response({"backupSharePairIds": ids})

    async def _report_v2(self, request: web.Request) -> web.Response:
        if self._caller(request) is None:
            return web.json_response({"error": "Unauthorized"}, status=401)
        body = await _json(request)
        method = body.get("backupMethod")
        # Portal knows its own methods only: "UNKNOWN" (our key for "no method") is not one.
        if body.get("success") is not True or method in (None, "", "UNKNOWN"):
            return web.json_response({"error": "bad body"}, status=400)
        return web.Response(status=204)

    async def _report_v1(self, request: web.Request) -> web.Response:
        # The first SDKs' storedClientBackupShare(success): `{"success": true}`, no method.
        if self._caller(request) is None:
            return web.json_response({"error": "Unauthorized"}, status=401)
        body = await _json(request)
        if body.get("success") is not True or body.get("backupMethod") == "UNKNOWN":
            return web.json_response({"error": "bad body"}, status=400)
        return web.Response(status=204)

    async def _register_webhook(self, request: web.Request) -> web.Response:
        _, _, key = request.headers.get("Authorization", "").partition(" ")
        if self.api_key is None or not hmac.compare_digest(key.encode(), self.api_key.encode()):
            return web.json_response({"error": "Unauthorized"}, status=401)
        body = await _json(request)
        url, secret = body.get("webhook"), body.get("secret")
        if not isinstance(url, str) or not isinstance(secret, str) or not secret:
            return web.json_response({"error": "webhook and secret are required"}, status=400)
        self.webhooks.append({"webhook": url, "secret_sha256": _digest(secret)})
        return web.json_response({"webhook": url})

    async def _control_client(self, request: web.Request) -> web.Response:
        body = await _json(request)
        self.add_client(str(body["token"]), str(body["clientId"]))
        return web.json_response({"ok": True})

    async def _control_fault(self, request: web.Request) -> web.Response:
        body = await _json(request)
        if "delay" in body:
            self.delay = float(body["delay"])
        if "status" in body:
            self.fail(
                int(body["status"]),
                times=body.get("times"),
                retry_after=body.get("retryAfter"),
                path=str(body.get("path", "")),
            )
        return web.json_response({"ok": True})

    async def _control_heal(self, _request: web.Request) -> web.Response:
        self.heal()
        return web.json_response({"ok": True})

    async def _control_calls(self, _request: web.Request) -> web.Response:
        return web.json_response([asdict(c) for c in self.calls])


async def _json(request: web.Request) -> dict[str, Any]:
    try:
        body = json.loads(await request.read() or b"{}")
    except ValueError:
        return {}
    return body if isinstance(body, dict) else {}


def _loggable(path: str, raw: bytes) -> Any:
    """The request body as recorded: parsed JSON, with the webhook secret masked."""
    try:
        body = json.loads(raw) if raw else None
    except ValueError:
        return None
    if path == WEBHOOK and isinstance(body, dict) and "secret" in body:
        body = {**body, "secret": "***"}
    return body


async def _serve(fake: FakePortal) -> None:
    async with fake:
        print(f"fake Portal listening on {fake.url}", flush=True)
        await asyncio.Event().wait()


def main() -> None:
    """Serve the fake until interrupted."""
    parser = argparse.ArgumentParser(description="A fake Portal API for tests and load runs.")
    parser.add_argument("--host", default="127.0.0.1")
    parser.add_argument("--port", type=int, default=0)
    parser.add_argument("--api-key", default=None, help="custodian API key for /api/webhook")
    parser.add_argument(
        "--client", action="append", default=[], metavar="TOKEN=CLIENT_ID", help="repeatable"
    )
    args = parser.parse_args()
    fake = FakePortal(api_key=args.api_key, host=args.host, port=args.port)
    for pair in args.client:
        token, _, client_id = pair.partition("=")
        fake.add_client(token, client_id)
    with contextlib.suppress(KeyboardInterrupt):
        asyncio.run(_serve(fake))


if __name__ == "__main__":
    main()
