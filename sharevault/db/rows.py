"""What the store takes and gives: sealed rows, stored shares, outbox rows, a client's bounds."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field
from datetime import datetime
from typing import Any

from asyncpg import Record

from sharevault.crypto import Identity, Keyring


@dataclass(frozen=True, slots=True)
class SealedRow:
    """One share to store, still sealed."""

    identity: Identity
    sealed: bytes
    version: int
    message_id: str
    # Client shares: the Portal report owed once applied, and the sealed bearer to send it with.
    report_api: str | None = None
    bearer_sealed: bytes | None = field(default=None, repr=False)
    # The HTTP request that produced it (X-Request-Id), carried on to the Portal report.
    request_id: str | None = None


@dataclass(frozen=True, slots=True)
class OutboxRow:
    """A report owed to Portal, leased to the sender that claimed it until `lease_until`."""

    id: int
    message_id: str
    identity: Identity
    report_api: str
    bearer_sealed: bytes | None = field(repr=False)
    attempts: int
    age: float
    request_id: str | None = None
    # The claim's token: settling applies only while the row's lease is still this one.
    lease_until: datetime | None = None


@dataclass(frozen=True, slots=True)
class OutboxOutcome:
    """How an attempt ended: 'pending' (retry after `delay` s), 'sent', 'failed' or 'expired'."""

    id: int
    status: str
    delay: float = 0.0
    http_status: int | None = None
    reason: str | None = None


def share_columns(rows: Sequence[SealedRow]) -> list[Any]:
    """The parameters of `store_batch`'s shares: kind, client_id, backup_method, pair_id (arrays),
    every sealed share in one bytes, their 1-based starts and sizes in it, then key_id, version,
    message_id (arrays). One bytea rather than a bytea[]: asyncpg encodes an array element by
    element, at about 14 µs per 7 KB share on this machine against 4 µs, and PostgreSQL parses
    the array at 4-5 µs per share against 3 µs for the cut (bench figures in the commit)."""
    starts, sizes, at = [], [], 1
    for r in rows:
        starts.append(at)
        sizes.append(len(r.sealed))
        at += len(r.sealed)
    return [
        [r.identity.kind for r in rows],
        [r.identity.client_id for r in rows],
        [r.identity.backup_method for r in rows],
        [r.identity.pair_id for r in rows],
        b"".join(r.sealed for r in rows),
        starts,
        sizes,
        [Keyring.key_id_of(r.sealed) for r in rows],
        [r.version for r in rows],
        [r.message_id for r in rows],
    ]


@dataclass(frozen=True, slots=True)
class StoredShare:
    backup_method: str
    pair_id: str
    sealed: bytes
    version: int
    message_id: str


def _stored(r: Record) -> StoredShare:
    return StoredShare(r["backup_method"], r["pair_id"], r["sealed"], r["version"], r["message_id"])


@dataclass(frozen=True, slots=True)
class SealedBearer:
    """A pending report's bearer as stored (to re-wrap); `identity` is its share's, and
    `message_id` the message it came with (what its seal is bound to)."""

    id: int
    identity: Identity
    sealed: bytes = field(repr=False)
    message_id: str = ""


@dataclass(frozen=True, slots=True)
class Bounds:
    """What one client may hold (docs/operations.md, "Budget and bounds")."""

    pairs_per_method: int = 8
    methods_per_client: int = 16

    @property
    def shares_per_kind(self) -> int:
        """The most shares of one kind a client can hold: what a read of them all returns."""
        return self.pairs_per_method * self.methods_per_client


def _identity_key(identity: Identity) -> tuple[str, str, str, str]:
    return (identity.kind, identity.client_id, identity.backup_method, identity.pair_id)
