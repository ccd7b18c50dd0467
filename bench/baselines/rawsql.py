"""The SQL the raw baselines run: the same versioned batch upsert sharevault uses, no notify."""

from __future__ import annotations

from collections.abc import Sequence

import asyncpg

UPSERT_BATCH = """
INSERT INTO shares AS s
    (kind, client_id, backup_method, pair_id, sealed, key_id, version, message_id)
SELECT * FROM unnest($1::text[], $2::text[], $3::text[], $4::text[], $5::bytea[], $6::text[],
                     $7::bigint[], $8::text[])
ON CONFLICT (kind, client_id, backup_method, pair_id) DO UPDATE
SET sealed = excluded.sealed, key_id = excluded.key_id, version = excluded.version,
    message_id = excluded.message_id, updated_at = now()
WHERE (excluded.version, excluded.message_id) > (s.version, s.message_id)
"""

Row = tuple[str, str, str, str, bytes, str, int, str]


async def upsert_rows(conn: asyncpg.Connection, rows: Sequence[Row]) -> None:
    """One transaction, one statement; keeps the newest row per identity (one touch per row)."""
    newest: dict[tuple[str, str, str, str], Row] = {}
    for row in rows:
        key = row[:4]
        held = newest.get(key)
        if held is None or (row[6], row[7]) > (held[6], held[7]):
            newest[key] = row
    chosen = list(newest.values())
    await conn.execute(UPSERT_BATCH, *([r[i] for r in chosen] for i in range(8)))
