"""Report-back sender: tells Portal which client shares are stored, from the outbox, retrying."""

from __future__ import annotations

import asyncio
import contextlib
import logging
import random
import time
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager

from sharevault.config import Settings
from sharevault.crypto import DecryptError, Keyring
from sharevault.db import TRANSIENT_ERRORS, Outbox, OutboxOutcome, OutboxRow, Store
from sharevault.messages import bearer_identity
from sharevault.metrics import OUTBOX_OLDEST_SECONDS, OUTBOX_PENDING, OUTBOX_REPORTS
from sharevault.portal import PortalClient, PortalRejected, PortalUnavailable

log = logging.getLogger(__name__)

_JITTER = random.SystemRandom()
# Many rows told "Retry-After: n" at once should not all come back in the same instant.
RETRY_AFTER_SPREAD = 0.1
GAUGE_EVERY = 5.0
PRUNE_EVERY = 60.0
PRUNE_CHUNK = 1000
# Giving leased rows back when stopping mid-send: best effort, the lease runs out anyway.
RELEASE_TIMEOUT = 2.0


def backoff(attempts: int, initial: float, cap: float) -> float:
    """Exponential delay after `attempts` failures, with equal jitter (half fixed, half random)."""
    delay = min(cap, initial * 2.0 ** min(attempts, 40))
    return delay / 2 + _JITTER.uniform(0, delay / 2)


class OutboxSender:
    """Claims due reports with a lease, sends them holding no connection, settles each outcome."""

    def __init__(
        self, settings: Settings, store: Store, keyring: Keyring, portal: PortalClient
    ) -> None:
        self._settings = settings
        self._store = store
        self._outbox = Outbox(store)
        self._keyring = keyring
        self._portal = portal
        # Counters for logs, tests and (later) metrics.
        self.sent = 0
        self.retried = 0
        self.failed = 0
        self.expired = 0
        # True while reports are on the wire: stopping then waits for Portal's answers.
        self.sending = False
        self._sampled = -GAUGE_EVERY
        self._pruned = -PRUNE_EVERY
        self.pruned = 0

    async def run(self, stop: asyncio.Event) -> None:
        """Send due reports until `stop` is set; the batch in hand is finished, not dropped."""
        limit = self._settings.outbox_batch_size
        while not stop.is_set():
            try:
                handled = await self._round(limit)
            except TRANSIENT_ERRORS as exc:
                log.warning("outbox: database unavailable (%s)", type(exc).__name__)
                handled = 0
            except Exception:
                # Keep reporting alive whatever one round hit; rows stay pending and are retried.
                log.exception("outbox: unexpected error")
                handled = 0
            await self._sample_gauges()
            await self._prune()
            if handled < limit:
                with contextlib.suppress(TimeoutError):
                    async with asyncio.timeout(self._settings.outbox_poll_interval):
                        await stop.wait()

    async def _round(self, limit: int) -> int:
        """Claim → send → settle: no connection or row lock is held while Portal answers."""
        rows = await self._outbox.claim(limit, self._settings.outbox_lease)
        if not rows:
            return 0
        try:
            outcomes = await self._send_all(rows)
        except asyncio.CancelledError:
            with contextlib.suppress(Exception):
                async with asyncio.timeout(RELEASE_TIMEOUT):
                    await asyncio.shield(self._outbox.release(rows))
            raise
        settled = await self._outbox.settle(rows, outcomes)
        if settled < len(rows):
            # The lease ran out mid-send and another sender claimed the row: its outcome counts.
            log.warning("outbox: %d report(s) outlived their lease", len(rows) - settled)
        return len(rows)

    async def _prune(self) -> None:
        """Delete settled reports older than OUTBOX_KEEP (every minute, in short chunks)."""
        keep, now = self._settings.outbox_keep, time.monotonic()
        if keep <= 0 or now - self._pruned < PRUNE_EVERY:
            return
        self._pruned = now
        with contextlib.suppress(*TRANSIENT_ERRORS):
            while (deleted := await self._store.prune_outbox(keep, PRUNE_CHUNK)) > 0:
                self.pruned += deleted
                if deleted < PRUNE_CHUNK:
                    break
                await asyncio.sleep(0)  # let the reports go out between chunks

    async def _sample_gauges(self) -> None:
        """Pending reports and the oldest one's age, for /metrics (at most every few seconds)."""
        now = time.monotonic()
        if now - self._sampled < GAUGE_EVERY:
            return
        self._sampled = now
        with contextlib.suppress(*TRANSIENT_ERRORS):
            pending, oldest = (await self._store.outbox_summary()).get("pending", (0, 0.0))
            OUTBOX_PENDING.set(pending)
            OUTBOX_OLDEST_SECONDS.set(oldest)

    async def _send_all(self, rows: list[OutboxRow]) -> list[OutboxOutcome]:
        self.sending = True
        try:
            return list(await asyncio.gather(*(self._send_one(row) for row in rows)))
        finally:
            self.sending = False

    async def _send_one(self, row: OutboxRow) -> OutboxOutcome:
        try:
            bearer = self._open_bearer(row)
        except DecryptError:
            self.failed += 1
            OUTBOX_REPORTS.labels("failed").inc()
            log.error("outbox: bearer of message %s does not decrypt", row.message_id)
            return OutboxOutcome(row.id, "failed", reason="bearer_undecryptable")
        identity = row.identity
        try:
            rid = row.request_id
            if row.report_api == "v3" and identity.pair_id:
                status = await self._portal.report_stored_v3(
                    bearer, [identity.pair_id], request_id=rid
                )
            else:
                status = await self._portal.report_stored_v2(
                    bearer, identity.backup_method, request_id=rid
                )
        except PortalRejected as exc:
            self.failed += 1
            OUTBOX_REPORTS.labels("failed").inc()
            log.warning("outbox: Portal refused report of message %s: %s", row.message_id, exc)
            return OutboxOutcome(row.id, "failed", http_status=exc.status, reason=exc.reason)
        except PortalUnavailable as exc:
            return self._later(row, exc)
        self.sent += 1
        OUTBOX_REPORTS.labels("sent").inc()
        log.info("outbox: reported message %s (client %s)", row.message_id, identity.client_id)
        return OutboxOutcome(row.id, "sent", http_status=status)

    def _open_bearer(self, row: OutboxRow) -> str:
        if row.bearer_sealed is None:
            raise DecryptError("no bearer")
        # Bound to its message: a bearer copied into another message does not open. (The
        # outbox keeps no version: the message id alone is checked.)
        bound = bearer_identity(row.identity)
        return self._keyring.open(row.bearer_sealed, bound, None, row.message_id).decode()

    def _later(self, row: OutboxRow, exc: PortalUnavailable) -> OutboxOutcome:
        """Reschedule: Portal's Retry-After when it gave one, else backoff; or give up."""
        settings = self._settings
        if exc.retry_after is not None:
            delay = exc.retry_after * (1 + _JITTER.uniform(0, RETRY_AFTER_SPREAD))
        else:
            delay = backoff(
                row.attempts, settings.outbox_backoff_initial, settings.outbox_backoff_max
            )
        if row.age + delay > settings.outbox_horizon:
            self.expired += 1
            OUTBOX_REPORTS.labels("expired").inc()
            reason = (
                f"gave up after {row.attempts + 1} attempts over {row.age:.0f}s"
                f" (horizon {settings.outbox_horizon:.0f}s); last: {exc.reason}"
            )
            log.error("outbox: report of message %s expired: %s", row.message_id, reason)
            return OutboxOutcome(row.id, "expired", http_status=exc.status, reason=reason)
        self.retried += 1
        log.warning(
            "outbox: report of message %s failed (%s); retrying in %.1fs",
            row.message_id,
            exc,
            delay,
        )
        return OutboxOutcome(
            row.id, "pending", delay=delay, http_status=exc.status, reason=exc.reason
        )


@asynccontextmanager
async def running_outbox(
    settings: Settings, store: Store, keyring: Keyring
) -> AsyncIterator[OutboxSender]:
    """The sender as a background task for the life of the block."""
    async with PortalClient(settings.portal_api_url, timeout=settings.portal_timeout) as portal:
        sender = OutboxSender(settings, store, keyring, portal)
        stop = asyncio.Event()
        task = asyncio.create_task(sender.run(stop), name="outbox-sender")
        try:
            yield sender
        finally:
            stop.set()
            # Reports on the wire get one Portal timeout to be answered and recorded; otherwise
            # (e.g. waiting for a database that is down) there is nothing worth waiting for:
            # a round cancelled mid-send gives its leased rows back (or they expire).
            grace = settings.portal_timeout + 1 if sender.sending else 1.0
            done, _ = await asyncio.wait({task}, timeout=grace)
            if not done:
                task.cancel()
            await asyncio.gather(task, return_exceptions=True)
            log.info(
                "outbox sender stopped: %d sent, %d retried, %d failed, %d expired",
                sender.sent,
                sender.retried,
                sender.failed,
                sender.expired,
            )
