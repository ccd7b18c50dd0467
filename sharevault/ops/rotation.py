"""Key rotation: re-seal every stored share and pending outbox bearer under the current key and in
the current format (bound to its version and message id), online, in short batches that never
overwrite a newer write; an interrupted run resumes where it stopped.

Rows are told apart by their key id column, the tag of what sealed them: `v2:<kid>` for the
current format, `<kid>` for a legacy seal; what is not the keyring's `current_tag` is re-sealed."""

from __future__ import annotations

import asyncio
from dataclasses import dataclass, field, replace
from typing import TYPE_CHECKING, Protocol

from sharevault.crypto import DecryptError, Identity, Keyring, key_name
from sharevault.messages import bearer_identity

if TYPE_CHECKING:
    # Only types: `sharevault --help` need not load the database driver.
    from sharevault.db import SealedBearer, SealedRow, Store

# Rows skipped because a worker or sender held them, or a newer write replaced them, get more
# passes (rows written meanwhile under the current key are done by themselves). The pause before
# each doubles: an outbox sender may hold its rows for a whole Portal timeout.
MAX_PASSES = 6
FIRST_PAUSE = 0.25


class Progress(Protocol):
    def advance(self, count: int) -> None: ...


class NoProgress:
    def advance(self, count: int) -> None:
        pass


@dataclass
class RotationSummary:
    """What one run did; rows are stored shares plus bearers of pending reports."""

    current_key: str
    dry_run: bool = False
    # Rows under another key when the run started, per table.
    to_rewrap_shares: int = 0
    to_rewrap_bearers: int = 0
    # Re-sealed and written (with --dry-run: opened, and would be written).
    shares: int = 0
    bearers: int = 0
    # Skipped because rewritten meanwhile or held by a worker or sender at that instant.
    busy: int = 0
    # Cannot be opened with this keyring (unknown key id, or tampered): left exactly as they are.
    unreadable_shares: set[Identity] = field(default_factory=set)
    unreadable_bearers: set[int] = field(default_factory=set)
    passes: int = 0
    # Rows still under another key when the run ended.
    remaining: int = 0

    @property
    def to_rewrap(self) -> int:
        return self.to_rewrap_shares + self.to_rewrap_bearers

    @property
    def unreadable(self) -> int:
        return len(self.unreadable_shares) + len(self.unreadable_bearers)


@dataclass(frozen=True)
class KeyUse:
    """How many rows one key id protects (of them `legacy` in the legacy format, binding no
    version or message id), and whether this keyring can open them."""

    key_id: str
    shares: int
    bearers: int
    in_keyring: bool
    current: bool
    legacy: int = 0


def not_current(counts: dict[str, dict[str, int]], current: str) -> tuple[int, int]:
    """(shares, bearers) sealed under another key than `current`."""
    shares = sum(n for kid, n in counts["shares"].items() if kid != current)
    bearers = sum(n for kid, n in counts["outbox"].items() if kid != current)
    return shares, bearers


def key_uses(counts: dict[str, dict[str, int]], keyring: Keyring) -> list[KeyUse]:
    """The keyring's ids (current first), then ids found in rows but missing from the keyring."""
    by_key: dict[str, dict[str, int]] = {}
    for table in ("shares", "outbox"):
        for tag, n in counts[table].items():
            use = by_key.setdefault(key_name(tag), {"shares": 0, "outbox": 0, "legacy": 0})
            use[table] += n
            use["legacy"] += n if tag == key_name(tag) else 0
    strangers = sorted(set(by_key) - set(keyring.key_ids))
    none = {"shares": 0, "outbox": 0, "legacy": 0}
    return [
        KeyUse(
            kid,
            by_key.get(kid, none)["shares"],
            by_key.get(kid, none)["outbox"],
            kid in keyring.key_ids,
            kid == keyring.current_id,
            by_key.get(kid, none)["legacy"],
        )
        for kid in [*keyring.key_ids, *strangers]
    ]


async def rotate(
    store: Store,
    keyring: Keyring,
    *,
    batch_size: int = 500,
    dry_run: bool = False,
    progress: Progress | None = None,
    pause: float = FIRST_PAUSE,
) -> RotationSummary:
    """Re-seal everything not under the keyring's current key; returns what it did."""
    progress = progress or NoProgress()
    current = keyring.current_tag
    summary = RotationSummary(keyring.current_id, dry_run=dry_run)
    summary.to_rewrap_shares, summary.to_rewrap_bearers = not_current(
        await store.key_counts(), current
    )
    for _ in range(1 if dry_run else MAX_PASSES):
        summary.passes += 1
        busy_before = summary.busy
        await _shares_pass(store, keyring, summary, batch_size, progress)
        await _bearers_pass(store, keyring, summary, batch_size, progress)
        if summary.busy == busy_before:
            break  # nothing was in anyone's way: another pass could not do better
        await asyncio.sleep(pause)
        pause *= 2
    summary.remaining = sum(not_current(await store.key_counts(), current))
    return summary


async def _shares_pass(
    store: Store, keyring: Keyring, summary: RotationSummary, batch_size: int, progress: Progress
) -> None:
    after: Identity | None = None
    while True:
        page, after = await store.shares_to_rewrap(keyring.current_tag, after, batch_size)
        if after is None:
            return
        resealed: list[SealedRow] = []
        for row in page:
            try:
                # Legacy seals open here whatever ACCEPT_LEGACY_SEALS says: this is their way out.
                plain = keyring.open(
                    row.sealed, row.identity, row.version, row.message_id, legacy=True
                )
            except DecryptError:
                summary.unreadable_shares.add(row.identity)
                continue
            sealed = keyring.seal(plain, row.identity, row.version, row.message_id)
            resealed.append(replace(row, sealed=sealed))
        if summary.dry_run:
            summary.shares += len(resealed)
        elif resealed:
            written = await store.rewrap_shares(resealed)
            summary.shares += len(written)
            summary.busy += len(resealed) - len(written)
        progress.advance(len(page))


async def _bearers_pass(
    store: Store, keyring: Keyring, summary: RotationSummary, batch_size: int, progress: Progress
) -> None:
    after = 0
    while page := await store.bearers_to_rewrap(keyring.current_tag, after, batch_size):
        after = page[-1].id
        resealed: list[tuple[SealedBearer, bytes]] = []
        for row in page:
            bound = bearer_identity(row.identity)
            try:
                opened = keyring.unseal(row.sealed, bound, legacy=True)
                if not opened.sealed_for(None, row.message_id):
                    raise DecryptError("sealed for another message")
            except DecryptError:
                summary.unreadable_bearers.add(row.id)
                continue
            # The outbox keeps no version: a legacy bearer is bound to its message id and 0.
            version = opened.version or 0
            sealed = keyring.seal(opened.plaintext, bound, version, row.message_id)
            resealed.append((row, sealed))
        if summary.dry_run:
            summary.bearers += len(resealed)
        elif resealed:
            written = await store.rewrap_bearers(resealed)
            summary.bearers += len(written)
            summary.busy += len(resealed) - len(written)
        progress.advance(len(page))
