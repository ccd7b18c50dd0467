"""A steady load of `/backup` requests for fault tests, and the check that nothing was lost."""

from __future__ import annotations

import asyncio
import time
from collections import Counter
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from typing import Any, TypeAlias

import asyncpg
from aiohttp import web
from aiohttp.test_utils import TestClient

from sharevault.crypto import Identity, Keyring
from tests.support.environment import secret_headers
from tests.support.leakcheck import sensitive

# Every share of the load starts with this: the leak check finds any log line that holds one.
SHARE_MARK = "outage-share-secret-"
sensitive(SHARE_MARK)

Client: TypeAlias = "TestClient[web.Request, web.Application]"


def share_text(client_id: str, seq: int) -> str:
    return f"{SHARE_MARK}{client_id}:{seq}:" + "x" * 256


@dataclass
class BackupLoad:
    """`identities` clients, each writing its own share again and again, one request at a time."""

    gateway: Client
    prefix: str
    identities: int = 12
    pause: float = 0.02
    acked: dict[str, int] = field(default_factory=dict)
    sent: dict[str, int] = field(default_factory=dict)
    statuses: Counter[int] = field(default_factory=Counter)
    answers: Counter[str] = field(default_factory=Counter)
    # Seconds each 503 took: the gateway must fail fast, not wait for a confirm that never comes.
    refusals: list[float] = field(default_factory=list)
    missing_retry_after: int = 0
    _tasks: list[asyncio.Task[None]] = field(default_factory=list)
    _stop: asyncio.Event = field(default_factory=asyncio.Event)

    def client_ids(self) -> list[str]:
        return [f"{self.prefix}-{n}" for n in range(self.identities)]

    async def __aenter__(self) -> BackupLoad:
        self._tasks = [asyncio.create_task(self._writer(c)) for c in self.client_ids()]
        return self

    async def __aexit__(self, *exc: object) -> None:
        self._stop.set()
        await asyncio.gather(*self._tasks)

    async def _writer(self, client_id: str) -> None:
        seq = 0
        while not self._stop.is_set():
            seq += 1
            self.sent[client_id] = seq
            body = {
                "clientId": client_id,
                "backupMethod": "GDRIVE",
                "share": share_text(client_id, seq),
            }
            started = time.monotonic()
            try:
                resp = await self.gateway.post(
                    "/webhook/backup", json=body, headers=secret_headers()
                )
                status = resp.status
                data: Any = await resp.json()
            except Exception:  # the in-process server itself is never cut; count it and go on
                status, data = 0, {}
            self.statuses[status] += 1
            if status == 200:
                self.acked[client_id] = seq
                self.answers[str(data.get("status"))] += 1
            elif status == 503:
                self.refusals.append(time.monotonic() - started)
                if resp.headers.get("Retry-After") is None:
                    self.missing_retry_after += 1
            await asyncio.sleep(self.pause)

    @property
    def total_acked(self) -> int:
        return self.statuses[200]

    async def until(self, check: Callable[[], bool], timeout: float = 30) -> None:
        deadline = time.monotonic() + timeout
        while not check():
            assert time.monotonic() < deadline, f"load did not get there: {dict(self.statuses)}"
            await asyncio.sleep(0.05)


async def stored_sequences(db: asyncpg.Connection, keyring: Keyring, prefix: str) -> dict[str, int]:
    """Client id → the sequence number of the share stored for it (opened with the keyring)."""
    rows = await db.fetch(
        "SELECT client_id, sealed FROM shares WHERE kind = 'custodian' AND client_id LIKE $1",
        f"{prefix}-%",
    )
    found = {}
    for row in rows:
        identity = Identity("custodian", row["client_id"], "GDRIVE", "")
        text = keyring.unseal(row["sealed"], identity).plaintext.decode()
        found[row["client_id"]] = int(text.removeprefix(SHARE_MARK).split(":")[1])
    return found


async def assert_nothing_lost(
    connect: Callable[[], Awaitable[asyncpg.Connection]],
    keyring: Keyring,
    load: BackupLoad,
    timeout: float = 30,
) -> None:
    """Every acknowledged share is stored with its newest version: none lost, none regressed."""
    deadline = time.monotonic() + timeout
    while True:
        conn = await connect()
        try:
            stored = await stored_sequences(conn, keyring, load.prefix)
        finally:
            await conn.close()
        behind = {
            c: (stored.get(c), seq) for c, seq in load.acked.items() if stored.get(c, 0) < seq
        }
        if not behind:
            break
        assert time.monotonic() < deadline, f"acknowledged but not stored (stored, acked): {behind}"
        await asyncio.sleep(0.2)
    # Newer than acknowledged is fine only for a request that was sent (and maybe answered 503).
    beyond = {c: s for c, s in stored.items() if s > load.sent.get(c, 0)}
    assert not beyond, f"stored a share never sent: {beyond}"
