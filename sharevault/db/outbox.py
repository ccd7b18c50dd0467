"""The report-back outbox as claim → send → settle: a claim leases due rows in one short
statement, the caller talks to Portal holding no connection and no lock, and settling records each
outcome only where the lease is still the caller's."""

from __future__ import annotations

from collections.abc import Sequence
from datetime import datetime

from asyncpg import Record

from sharevault.crypto import Identity
from sharevault.db.queries import Q
from sharevault.db.rows import OutboxOutcome, OutboxRow
from sharevault.db.store import Store


def _row(r: Record) -> OutboxRow:
    return OutboxRow(
        r["id"],
        r["message_id"],
        Identity("client", r["client_id"], r["backup_method"], r["pair_id"]),
        r["report_api"],
        r["bearer_sealed"],
        r["attempts"],
        r["age"],
        r["request_id"],
        r["lease_until"],
    )


class Outbox:
    """Leases on due reports. A lease is the row's next attempt time moved past it: other senders
    skip the row until then, and a sender that dies holding it gives it back by expiring."""

    def __init__(self, store: Store) -> None:
        self._pool = store.pool

    async def claim(self, limit: int, lease: float) -> list[OutboxRow]:
        """Up to `limit` due reports, leased to the caller for `lease` seconds."""
        return [_row(r) for r in await self._pool.fetch(Q["outbox_claim"], limit, lease)]

    async def settle(self, rows: Sequence[OutboxRow], outcomes: Sequence[OutboxOutcome]) -> int:
        """Record each outcome where the caller still holds the row's lease; how many were."""
        leases: dict[int, datetime | None] = {row.id: row.lease_until for row in rows}
        settled = await self._pool.fetch(
            Q["outbox_settle"],
            [o.id for o in outcomes],
            [o.status for o in outcomes],
            [o.delay for o in outcomes],
            [o.http_status for o in outcomes],
            [o.reason for o in outcomes],
            [leases[o.id] for o in outcomes],
        )
        return len(settled)

    async def release(self, rows: Sequence[OutboxRow]) -> None:
        """Give leased rows back at once (due now), as when a sender stops mid-send."""
        await self._pool.execute(
            Q["outbox_release"], [row.id for row in rows], [row.lease_until for row in rows]
        )
