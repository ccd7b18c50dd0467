"""The drill load: Portal's webhooks and wallet apps' client shares, every 2xx recorded."""

from __future__ import annotations

import asyncio
import contextlib
import json
import time
from collections import Counter
from dataclasses import dataclass, field
from typing import Any

import aiohttp

from tests.support import FakePortal, GatewayDriver

# Every share of a drill starts with this: a log line holding one is a leak.
SHARE_MARK = "drill-share-secret-"
METHODS = ("GDRIVE", "ICLOUD", "PASSKEY-ED25519")
# Each custodian writer keeps this many identities, overwriting them in turn.
SPREAD = 3
FAILED_PAUSE = 0.25

Key = tuple[str, str, str, str]  # (kind, client_id, backup_method, pair_id) as stored


def share_text(key: Key, seq: int, size: int) -> str:
    """The share sent as the `seq`-th write of `key`: opaque to sharevault, checkable by us."""
    head = json.dumps({"mark": SHARE_MARK, "key": list(key), "seq": seq})
    return SHARE_MARK + head + "x" * max(0, size - len(head))


def seq_of(text: str) -> int | None:
    """The write number inside a stored share, None when it is not one of ours."""
    if not text.startswith(SHARE_MARK):
        return None
    try:
        head, _ = json.JSONDecoder().raw_decode(text, len(SHARE_MARK))
        return int(head["seq"])
    except (ValueError, KeyError, TypeError):
        return None


@dataclass(frozen=True)
class Ack:
    seq: int
    message_id: str
    status: str  # "committed" or "queued"
    sent_at: float  # monotonic
    acked_at: float


@dataclass
class IdentityLog:
    """What one identity was sent and what the gateway acknowledged, in order."""

    key: Key
    sent: int = 0
    acks: list[Ack] = field(default_factory=list)

    @property
    def newest(self) -> Ack | None:
        return self.acks[-1] if self.acks else None

    def newest_before(self, moment: float) -> Ack | None:
        for ack in reversed(self.acks):
            if ack.acked_at <= moment:
                return ack
        return None


@dataclass
class Ledger:
    """Every identity written, every answer counted."""

    identities: dict[Key, IdentityLog] = field(default_factory=dict)
    answers: Counter[str] = field(default_factory=Counter)
    # The newest write each identity was ever seen to hold in the database, and the identities
    # once seen holding an older one than that: regressions.
    seen_stored: dict[Key, int] = field(default_factory=dict)
    went_back: dict[Key, tuple[int, int]] = field(default_factory=dict)
    in_flight: int = 0
    # Every answer (or failure, status 0): when its request was sent, how long it took.
    timings: list[tuple[float, float, int]] = field(default_factory=list)

    def slowest(self, start: float, end: float) -> tuple[float, Counter[int]]:
        """The longest answer to a request sent in [start, end), and the answers by status."""
        during = [(took, status) for sent, took, status in self.timings if start <= sent < end]
        return max((took for took, _ in during), default=0.0), Counter(s for _, s in during)

    def log(self, key: Key) -> IdentityLog:
        return self.identities.setdefault(key, IdentityLog(key))

    @property
    def acknowledged(self) -> int:
        return sum(len(i.acks) for i in self.identities.values())

    def committed_sent_after(self, moment: float) -> int:
        """Writes sent after `moment` that came back committed (the service works again)."""
        return sum(
            1
            for i in self.identities.values()
            for a in i.acks
            if a.sent_at >= moment and a.status == "committed"
        )


@dataclass
class LoadShape:
    custodian_writers: int = 12
    client_writers: int = 4
    share_bytes: int = 2048
    pause: float = 0.02


class BackupLoad:
    """Writers, one request in flight each, so an identity's writes are ordered by send time."""

    def __init__(
        self, driver: GatewayDriver, portal: FakePortal, prefix: str, shape: LoadShape
    ) -> None:
        self.driver = driver
        self.prefix = prefix
        self.shape = shape
        self.ledger = Ledger()
        self.tokens: list[str] = []
        self._stop = asyncio.Event()
        self._tasks: list[asyncio.Task[None]] = []
        for n in range(shape.client_writers):
            token = f"drill-token-{prefix}-{n}-" + "t" * 16
            portal.add_client(token, self._app_client(n))
            self.tokens.append(token)

    @property
    def app_clients(self) -> list[tuple[str, str]]:
        """(client id, bearer token) of every wallet app of the load."""
        return [(self._app_client(n), token) for n, token in enumerate(self.tokens)]

    def _app_client(self, n: int) -> str:
        return f"{self.prefix}-app{n}"

    def start(self) -> None:
        for n in range(self.shape.custodian_writers):
            self._tasks.append(asyncio.create_task(self._custodian(n)))
        for n in range(self.shape.client_writers):
            self._tasks.append(asyncio.create_task(self._client(n)))

    async def stop(self) -> None:
        self._stop.set()
        await asyncio.gather(*self._tasks)

    async def _send(self, key: Key, call: Any) -> str | None:
        """Run one request; record a 2xx under `key`; the message id or None."""
        log = self.ledger.log(key)
        log.sent += 1
        seq = log.sent
        started = time.monotonic()
        self.ledger.in_flight += 1
        try:
            answer = await call(share_text(key, seq, self.shape.share_bytes))
        except (aiohttp.ClientError, TimeoutError) as exc:
            self.ledger.answers[f"error {type(exc).__name__}"] += 1
            self.ledger.timings.append((started, time.monotonic() - started, 0))
            return None
        finally:
            self.ledger.in_flight -= 1
        self.ledger.timings.append((started, time.monotonic() - started, answer.status))
        self.ledger.answers[str(answer.status)] += 1
        body = answer.body if isinstance(answer.body, dict) else {}
        if 200 <= answer.status < 300 and isinstance(body.get("messageId"), str):
            status = str(body.get("status"))
            log.acks.append(Ack(seq, body["messageId"], status, started, time.monotonic()))
            return str(body["messageId"])
        return None

    async def _pause(self, failed: bool) -> None:
        # After a refusal, wait as a retrying client would (the gateway says Retry-After: 1).
        pause = max(self.shape.pause, FAILED_PAUSE) if failed else self.shape.pause
        with contextlib.suppress(TimeoutError):
            await asyncio.wait_for(self._stop.wait(), pause)

    async def _custodian(self, n: int) -> None:
        turn = 0
        while not self._stop.is_set():
            slot = turn % SPREAD
            turn += 1
            client_id = f"{self.prefix}-c{n}-{slot}"
            method = METHODS[(n + slot) % len(METHODS)]
            pair = f"pair-{n}-{slot}" if slot != 2 else None  # some legacy writes without a pair
            key: Key = ("custodian", client_id, method, pair or "")

            async def call(share: str, cid: str = client_id, m: str = method, p: Any = pair) -> Any:
                return await self.driver.backup(cid, share, method=m, pair_id=p)

            await self._pause(await self._send(key, call) is None)

    async def _client(self, n: int) -> None:
        """A wallet app: each stored backup makes a new pair; a failed one is sent again."""
        client_id, token = self._app_client(n), self.tokens[n]
        legacy = n % 4 == 3  # `{"backupShare"}` without method or pair: v2 report, overwrites
        backups = 0
        while not self._stop.is_set():
            if legacy:
                key: Key = ("client", client_id, "UNKNOWN", "")
            else:
                key = ("client", client_id, "GDRIVE", f"{client_id}-pair{backups}")

            async def call(share: str, k: Key = key) -> Any:
                body: dict[str, Any] = {"backupShare": share}
                if not legacy:
                    body = {"backupMethod": k[2], "backupSharePairId": k[3], "cipherText": share}
                return await self.driver.client_backup(k[1], token, body)

            failed = await self._send(key, call) is None
            backups += not failed
            await self._pause(failed)
