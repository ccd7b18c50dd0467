"""Acts as Portal (and as an app) toward a sharevault gateway: write, read back, check."""

from __future__ import annotations

import time
from dataclasses import dataclass
from typing import Any

import aiohttp


@dataclass(frozen=True)
class Answer:
    status: int
    body: Any


@dataclass(frozen=True)
class RoundTrip:
    """`/backup` then `/backup/fetch` at once, as Portal does: did the share come back?"""

    ok: bool
    problem: str | None
    backup_status: int
    stored: str | None  # 'committed' or 'queued' from the /backup answer
    backup_seconds: float
    fetch_seconds: float


class GatewayDriver:
    """Calls the gateway the way Portal's webhooks and a wallet app do; open with `async with`."""

    def __init__(
        self,
        base_url: str,
        *,
        webhook_secret: str,
        webhook_root: str = "/webhook",
        client_root: str = "/portal",
        timeout: float = 15.0,
    ) -> None:
        self.base_url = base_url.rstrip("/")
        self._secret = webhook_secret
        self._webhook_root = webhook_root
        self._client_root = client_root
        self._timeout = aiohttp.ClientTimeout(total=timeout)
        self._session: aiohttp.ClientSession | None = None

    async def __aenter__(self) -> GatewayDriver:
        self._session = aiohttp.ClientSession(timeout=self._timeout)
        return self

    async def __aexit__(self, *exc: object) -> None:
        if self._session is not None:
            await self._session.close()
            self._session = None

    async def _call(self, method: str, path: str, **kwargs: Any) -> Answer:
        if self._session is None:
            raise RuntimeError("GatewayDriver used outside `async with`")
        async with self._session.request(method, self.base_url + path, **kwargs) as resp:
            text = await resp.text()
            try:
                body: Any = await resp.json(content_type=None) if text else None
            except ValueError:
                body = text
            return Answer(resp.status, body)

    # --- as Portal (custodian webhooks) ---------------------------------------------------------

    async def backup(
        self, client_id: str, share: str, *, method: str | None = None, pair_id: str | None = None
    ) -> Answer:
        body: dict[str, Any] = {"clientId": client_id, "share": share}
        if method is not None:
            body["backupMethod"] = method
        if pair_id is not None:
            body["backupSharePairId"] = pair_id
        headers = {"X-Webhook-Secret": self._secret}
        return await self._call("POST", f"{self._webhook_root}/backup", json=body, headers=headers)

    async def fetch(self, client_id: str) -> Answer:
        headers = {"X-Webhook-Secret": self._secret}
        return await self._call(
            "POST",
            f"{self._webhook_root}/backup/fetch",
            json={"clientId": client_id},
            headers=headers,
        )

    async def backup_and_verify(
        self, client_id: str, share: str, *, method: str | None = None, pair_id: str | None = None
    ) -> RoundTrip:
        """What Portal does on every backup: store, then read back at once and compare."""
        started = time.perf_counter()
        stored = await self.backup(client_id, share, method=method, pair_id=pair_id)
        backed = time.perf_counter()
        status = stored.body.get("status") if isinstance(stored.body, dict) else None
        if stored.status != 200:
            return RoundTrip(
                False,
                f"/backup answered {stored.status}",
                stored.status,
                None,
                backed - started,
                0.0,
            )
        fetched = await self.fetch(client_id)
        fetch_seconds = time.perf_counter() - backed
        problem = None
        if fetched.status != 200:
            problem = f"/backup/fetch answered {fetched.status}"
        elif share not in (fetched.body or {}).get("backupShares", []):
            problem = "share missing from /backup/fetch (read-your-writes broken)"
        return RoundTrip(problem is None, problem, 200, status, backed - started, fetch_seconds)

    # --- as a wallet app (client backup shares) -------------------------------------------------

    def _client_path(self, client_id: str) -> str:
        return f"{self._client_root}/clients/{client_id}/backup"

    async def client_backup(self, client_id: str, bearer: str, body: dict[str, Any]) -> Answer:
        headers = {"Authorization": f"Bearer {bearer}"}
        return await self._call("POST", self._client_path(client_id), json=body, headers=headers)

    async def client_get(
        self,
        client_id: str,
        bearer: str,
        *,
        method: str | None = None,
        pair_id: str | None = None,
    ) -> Answer:
        params = {}
        if method is not None:
            params["backupMethod"] = method
        if pair_id is not None:
            params["backupSharePairId"] = pair_id
        headers = {"Authorization": f"Bearer {bearer}"}
        return await self._call("GET", self._client_path(client_id), params=params, headers=headers)
