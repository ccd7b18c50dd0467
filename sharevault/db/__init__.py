"""PostgreSQL: the only package that imports asyncpg.

store (typed queries over a pool), rows (what it takes and gives), queries (sql/queries.sql),
errors (down now, or bad input), listener (commit notices), vacuum, migrations, outbox (claim →
send → settle with leases)."""

from __future__ import annotations

from sharevault.db.errors import (
    DATABASE_ERRORS,
    PERMANENT_ERRORS,
    REFUSALS,
    TRANSIENT_ERRORS,
    refusal_of,
)
from sharevault.db.listener import (
    COMMIT_CHANNEL,
    NOTIFY_PAYLOAD_LIMIT,
    CommitListener,
    notice_payloads,
    refusal_payloads,
)
from sharevault.db.migrations import (
    MIGRATION_LOCK,
    Migration,
    MigrationError,
    MigrationState,
    ensure_database,
    migrate,
    migration_files,
    migration_status,
)
from sharevault.db.outbox import Outbox
from sharevault.db.queries import Q, load_queries
from sharevault.db.rows import (
    Bounds,
    OutboxOutcome,
    OutboxRow,
    SealedBearer,
    SealedRow,
    StoredShare,
    share_columns,
)
from sharevault.db.store import Store, open_store
from sharevault.db.vacuum import (
    VACUUM_LOOK_EVERY,
    VACUUM_LOOK_IDLE,
    VACUUM_MIN_DEAD,
    VACUUM_SCALE,
    VACUUM_TIMEOUT,
    DeadRows,
    vacuuming_shares,
)

__all__ = [
    "COMMIT_CHANNEL",
    "DATABASE_ERRORS",
    "MIGRATION_LOCK",
    "NOTIFY_PAYLOAD_LIMIT",
    "PERMANENT_ERRORS",
    "REFUSALS",
    "TRANSIENT_ERRORS",
    "VACUUM_LOOK_EVERY",
    "VACUUM_LOOK_IDLE",
    "VACUUM_MIN_DEAD",
    "VACUUM_SCALE",
    "VACUUM_TIMEOUT",
    "Bounds",
    "CommitListener",
    "DeadRows",
    "Migration",
    "MigrationError",
    "MigrationState",
    "Outbox",
    "OutboxOutcome",
    "OutboxRow",
    "Q",
    "SealedBearer",
    "SealedRow",
    "Store",
    "StoredShare",
    "ensure_database",
    "load_queries",
    "migrate",
    "migration_files",
    "migration_status",
    "notice_payloads",
    "open_store",
    "refusal_of",
    "refusal_payloads",
    "share_columns",
    "vacuuming_shares",
]
