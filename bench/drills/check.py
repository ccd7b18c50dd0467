"""The invariant checker: what the load was told (2xx) against what PostgreSQL and Portal hold."""

from __future__ import annotations

from collections import Counter, defaultdict
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field

import asyncpg

from bench.drills.load import Ack, Key, Ledger, seq_of, share_text
from sharevault.crypto import DecryptError, Identity, Keyring
from sharevault.portal import REPORT_V1, REPORT_V2, REPORT_V3
from sharevault.schemas import UNKNOWN_METHOD
from tests.support.fake_portal import Call

SHARES = """
SELECT kind, client_id, backup_method, pair_id, sealed, message_id FROM shares
WHERE client_id LIKE $1
"""
# Rows for one identity, or one message stored twice: both must be zero.
DUPLICATES = """
SELECT (SELECT count(*) - count(DISTINCT (kind, client_id, backup_method, pair_id))
          FROM shares WHERE client_id LIKE $1)
     + (SELECT count(*) - count(DISTINCT message_id) FROM shares WHERE client_id LIKE $1)
     + (SELECT count(*) - count(DISTINCT message_id) FROM outbox WHERE client_id LIKE $1)
"""
OUTBOX = """
SELECT message_id, client_id, backup_method, pair_id, status FROM outbox WHERE client_id LIKE $1
"""
PENDING_BEFORE = """
SELECT count(*) FROM outbox
WHERE client_id LIKE $1 AND status = 'pending' AND created_at <= to_timestamp($2)
"""
# A report Portal got twice is explained when a crash hit within this many seconds after the
# first one: the documented window between Portal's 2xx and the commit of the row's `sent`.
CRASH_WINDOW = 3.0
# A crash is recorded when we see it: the sender may have died a little before.
CRASH_SEEN_LATE = 0.5
# The gateway's default PAIRS_PER_METHOD: older pairs of a method are pruned on re-backup.
PAIRS_PER_METHOD = 8


@dataclass
class Verdict:
    acknowledged: int = 0
    identities: int = 0
    lost: int = 0
    pruned: int = 0  # pairs gone because PAIRS_PER_METHOD newer ones are stored: allowed
    regressed: int = 0
    duplicated: int = 0
    wrong: int = 0  # stored content or message id that matches no write we sent
    reports_owed: int = 0
    reports_delivered: int = 0
    unreported: int = 0
    reported_twice: int = 0
    reported_twice_in_crash_window: int = 0
    reported_unowed: int = 0  # Portal told of a share no outbox row owes: never allowed
    max_reports_of_one_share: int = 0
    problems: list[str] = field(default_factory=list)

    @property
    def holds(self) -> bool:
        return not (
            self.lost
            or self.regressed
            or self.duplicated
            or self.wrong
            or self.unreported
            or self.reported_unowed
            or self.reported_twice > self.reported_twice_in_crash_window
        )

    def note(self, problem: str) -> None:
        if len(self.problems) < 20:
            self.problems.append(problem)


@dataclass(frozen=True)
class Stored:
    seq: int | None  # None: not one of our shares, or it does not open
    message_id: str
    text_ok: bool


async def stored_shares(
    conn: asyncpg.Connection, keyring: Keyring, ledger: Ledger, prefix: str, share_bytes: int
) -> dict[Key, Stored]:
    """Every stored share of the run, opened and read back to its write number; each look is
    remembered in the ledger, so that a later look finding an older write is a regression."""
    found: dict[Key, Stored] = {}
    for r in await conn.fetch(SHARES, f"{prefix}-%"):
        key: Key = (r["kind"], r["client_id"], r["backup_method"], r["pair_id"])
        try:
            text = keyring.open(r["sealed"], Identity(*key), None, r["message_id"]).decode()
        except (DecryptError, UnicodeDecodeError):
            found[key] = Stored(None, r["message_id"], False)
            continue
        seq = seq_of(text)
        ok = seq is not None and text == share_text(key, seq, share_bytes)
        found[key] = Stored(seq, r["message_id"], ok)
    for key, row in found.items():
        seen = ledger.seen_stored.get(key, 0)
        if row.seq is not None and row.seq < seen:
            ledger.went_back.setdefault(key, (seen, row.seq))
        ledger.seen_stored[key] = max(seen, row.seq or 0)
    return found


def behind(
    ledger: Ledger,
    stored: dict[Key, Stored],
    moment: float | None = None,
    pairs_per_method: int = PAIRS_PER_METHOD,
) -> int:
    """Identities whose share acknowledged (by `moment`) is not stored yet, or was overwritten
    (a pair pruned by `pairs_per_method` newer ones is neither)."""
    newer_pairs = _newer_pairs_stored(ledger, stored)
    count = 0
    for log in ledger.identities.values():
        ack = log.newest if moment is None else log.newest_before(moment)
        row = stored.get(log.key)
        if row is None and ack is not None and newer_pairs(log.key, ack) >= pairs_per_method:
            continue
        if ack is not None and (row is None or (row.seq or 0) < ack.seq):
            count += 1
    return count


async def pending_reports_before(conn: asyncpg.Connection, prefix: str, wall: float) -> int:
    return int(await conn.fetchval(PENDING_BEFORE, f"{prefix}-%", wall))


def _newer_pairs_stored(ledger: Ledger, stored: dict[Key, Stored]) -> Callable[[Key, Ack], int]:
    """How many pairs of a key's (kind, client, method) are stored whose newest write was sent
    after the key's was acknowledged (a wallet app sends one backup at a time)."""
    sent: dict[tuple[str, str, str], list[float]] = defaultdict(list)
    for key in stored:
        log = ledger.identities.get(key)
        if log is not None and log.newest is not None:
            sent[key[:3]].append(log.newest.sent_at)
    return lambda key, ack: sum(1 for t in sent[key[:3]] if t > ack.acked_at)


def _check_shares(
    verdict: Verdict, ledger: Ledger, stored: dict[Key, Stored], pairs_per_method: int
) -> None:
    newer_pairs = _newer_pairs_stored(ledger, stored)
    for key, log in ledger.identities.items():
        row, ack = stored.get(key), log.newest
        if row is not None and not row.text_ok:
            verdict.wrong += 1
            verdict.note(f"{key}: stored share is not a write we sent")
        if key in ledger.went_back:
            before, after = ledger.went_back[key]
            verdict.regressed += 1
            verdict.note(f"{key}: went back from write {before} to {after}")
        if ack is None:
            continue
        if row is None and newer_pairs(key, ack) >= pairs_per_method:
            verdict.pruned += 1  # a re-backup's pruning, never the newest pairs
        elif row is None or (row.seq is not None and row.seq < ack.seq):
            verdict.lost += 1
            held = "nothing" if row is None else f"write {row.seq}"
            verdict.note(f"{key}: acknowledged write {ack.seq} ({ack.message_id}), holds {held}")
        elif row.seq == ack.seq and row.message_id != ack.message_id:
            verdict.wrong += 1
            verdict.note(f"{key}: write {ack.seq} stored under another message id")
        elif row.seq is not None and row.seq > log.sent:
            verdict.wrong += 1
            verdict.note(f"{key}: holds write {row.seq}, only {log.sent} sent")
    for key in stored.keys() - ledger.identities.keys():
        verdict.wrong += 1
        verdict.note(f"{key}: stored, never sent")


def report_key(client_id: str, method: str, pair_id: str) -> tuple[str, str]:
    """What a report names: the pair (v3) when there is one, else the method (v2)."""
    return (client_id, f"pair:{pair_id}" if pair_id else f"method:{method}")


def delivered_reports(calls: Iterable[Call], prefix: str) -> dict[tuple[str, str], list[float]]:
    """Report-back calls Portal answered 2xx on an open connection, by what they name."""
    found: dict[tuple[str, str], list[float]] = defaultdict(list)
    for call in calls:
        if call.path not in (REPORT_V1, REPORT_V2, REPORT_V3) or not (200 <= call.status < 300):
            continue
        client = call.client_id or ""
        if not call.delivered or not client.startswith(f"{prefix}-"):
            continue
        body = call.body if isinstance(call.body, dict) else {}
        if call.path == REPORT_V3:
            for pair in body.get("backupSharePairIds") or []:
                found[report_key(client, "", str(pair))].append(call.at)
        else:
            # v1 reports a share stored without a method: it names none (UNKNOWN is our key).
            method = str(body.get("backupMethod") or UNKNOWN_METHOD)
            found[report_key(client, method, "")].append(call.at)
    return found


def _check_reports(
    verdict: Verdict,
    outbox: list[asyncpg.Record],
    stored: dict[Key, Stored],
    reports: dict[tuple[str, str], list[float]],
    crashes: list[float],
) -> None:
    owed: Counter[tuple[str, str]] = Counter()
    unsent: Counter[tuple[str, str]] = Counter()
    for r in outbox:
        key = report_key(r["client_id"], r["backup_method"], r["pair_id"])
        owed[key] += 1
        if r["status"] != "sent":
            unsent[key] += 1
            verdict.note(f"report of {r['message_id']} is {r['status']}")
    verdict.reports_owed = sum(owed.values())
    verdict.reports_delivered = sum(len(v) for v in reports.values())
    owed_ids = {r["message_id"] for r in outbox}
    for stored_key, row in stored.items():
        if stored_key[0] == "client" and row.message_id not in owed_ids:
            verdict.unreported += 1
            verdict.note(f"{stored_key}: stored client share owes no report")
    for key in owed.keys() | reports.keys():
        times = sorted(reports.get(key, []))
        verdict.max_reports_of_one_share = max(
            verdict.max_reports_of_one_share, len(times) - owed[key] + 1
        )
        verdict.unreported += max(owed[key] - len(times), unsent[key])
        extra = len(times) - owed[key]
        if extra > 0 and not owed[key]:
            verdict.reported_unowed += extra
            verdict.note(f"{key}: reported {extra} times, never stored")
        elif extra > 0:
            verdict.reported_twice += extra
            near_crash = sum(
                1
                for t in times
                if any(t - CRASH_SEEN_LATE <= c <= t + CRASH_WINDOW for c in crashes)
            )
            verdict.reported_twice_in_crash_window += min(extra, near_crash)
            verdict.note(f"{key}: reported {len(times)} times for {owed[key]} stored shares")


async def check(
    conn: asyncpg.Connection,
    keyring: Keyring,
    ledger: Ledger,
    prefix: str,
    share_bytes: int,
    calls: Iterable[Call],
    crashes: list[float],
    pairs_per_method: int = PAIRS_PER_METHOD,
) -> Verdict:
    """Every invariant of a drill, from the database and the fake Portal's record."""
    verdict = Verdict(acknowledged=ledger.acknowledged, identities=len(ledger.identities))
    stored = await stored_shares(conn, keyring, ledger, prefix, share_bytes)
    _check_shares(verdict, ledger, stored, pairs_per_method)
    verdict.duplicated = int(await conn.fetchval(DUPLICATES, f"{prefix}-%"))
    outbox = await conn.fetch(OUTBOX, f"{prefix}-%")
    _check_reports(verdict, outbox, stored, delivered_reports(calls, prefix), crashes)
    return verdict
