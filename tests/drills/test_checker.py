"""The drills' invariant checker finds what it is there to find: a lost, regressed or foreign
share, an unreported client share, a report Portal got twice."""

from __future__ import annotations

import asyncpg

from bench.drills.check import CRASH_WINDOW, Verdict, check, stored_shares
from bench.drills.load import Ack, Key, Ledger, share_text
from sharevault.config import parse_keyring
from sharevault.crypto import Identity, Keyring
from sharevault.portal import REPORT_V2, REPORT_V3
from tests.support.environment import KEY_A
from tests.support.fake_portal import Call

KEYRING = Keyring(parse_keyring(f"ka:{KEY_A}"))
SIZE = 64
P = "chk"


def acked(ledger: Ledger, key: Key, *seqs: int) -> None:
    log = ledger.log(key)
    for seq in seqs:
        log.sent = max(log.sent, seq)
        log.acks.append(Ack(seq, f"{key[1]}-m{seq}", "committed", 0.0, 0.0))


async def store(db: asyncpg.Connection, key: Key, seq: int, message_id: str | None = None) -> None:
    message_id = message_id or f"{key[1]}-m{seq}"
    sealed = KEYRING.seal(share_text(key, seq, SIZE).encode(), Identity(*key), seq, message_id)
    await db.execute(
        "INSERT INTO shares (kind, client_id, backup_method, pair_id, sealed, key_id, version,"
        " message_id) VALUES ($1, $2, $3, $4, $5, 'v2:ka', $6, $7)",
        *key,
        sealed,
        seq,
        message_id,
    )


async def owe(db: asyncpg.Connection, key: Key, seq: int, status: str = "sent") -> None:
    await db.execute(
        "INSERT INTO outbox (message_id, client_id, backup_method, pair_id, report_api, status)"
        " VALUES ($1, $2, $3, $4, 'v3', $5)",
        f"{key[1]}-m{seq}",
        key[1],
        key[2],
        key[3],
        status,
    )


def report(client_id: str, pair: str, at: float) -> Call:
    body = {"status": "STORED_CLIENT_BACKUP_SHARE", "backupSharePairIds": [pair]}
    return Call("PATCH", REPORT_V3, 200, client_id, body, True, at)


async def verdict(
    db: asyncpg.Connection, ledger: Ledger, calls: list[Call], crashes: list[float]
) -> Verdict:
    return await check(db, KEYRING, ledger, P, SIZE, calls, crashes)


async def test_a_faithful_store_passes(db: asyncpg.Connection) -> None:
    ledger = Ledger()
    cust: Key = ("custodian", f"{P}-c0", "GDRIVE", "")
    app: Key = ("client", f"{P}-app0", "GDRIVE", "pair0")
    acked(ledger, cust, 1, 2)
    acked(ledger, app, 1)
    ledger.log(cust).sent = 3  # write 3 was sent, unanswered, yet stored: allowed
    await store(db, cust, 3)
    await store(db, app, 1)
    await owe(db, app, 1)
    found = await verdict(db, ledger, [report(app[1], "pair0", 1.0)], [])
    assert found.holds, found.problems
    assert (found.acknowledged, found.reports_owed, found.reports_delivered) == (3, 1, 1)


async def test_lost_regressed_and_foreign_shares_are_found(db: asyncpg.Connection) -> None:
    ledger = Ledger()
    lost: Key = ("custodian", f"{P}-lost", "GDRIVE", "")
    behind: Key = ("custodian", f"{P}-behind", "ICLOUD", "p")
    back: Key = ("custodian", f"{P}-back", "GDRIVE", "p")
    other: Key = ("custodian", f"{P}-other", "GDRIVE", "")
    acked(ledger, lost, 1)
    acked(ledger, behind, 1, 2)
    acked(ledger, back, 1, 2)
    ledger.log(back).sent = 3
    acked(ledger, other, 1)
    await store(db, behind, 1)
    await store(db, back, 3)
    await stored_shares(db, KEYRING, ledger, P, SIZE)  # a look during the drill sees write 3
    await db.execute("DELETE FROM shares WHERE client_id = $1", back[1])
    await store(db, back, 2)  # ...and later write 2 is back
    await store(db, other, 1, message_id="not-the-acknowledged-one")
    await store(db, ("custodian", f"{P}-never", "GDRIVE", ""), 1)
    found = await verdict(db, ledger, [], [])
    assert not found.holds
    assert (found.lost, found.regressed, found.wrong) == (2, 1, 2), found.problems


async def test_a_pair_pruned_by_eight_newer_ones_is_not_lost(db: asyncpg.Connection) -> None:
    # A wallet app re-backs up under a new pair each time: the oldest pairs are pruned
    # (PAIRS_PER_METHOD = 8). Gone with 8 newer pairs stored: pruned; with only 7: lost.
    ledger = Ledger()
    pairs: list[Key] = [("custodian", f"{P}-app", "GDRIVE", f"pair{n}") for n in range(10)]
    for n, key in enumerate(pairs):
        log = ledger.log(key)
        log.sent = 1
        log.acks.append(Ack(1, f"{key[3]}-m1", "committed", float(n), n + 0.5))
    for key in pairs[2:]:
        await store(db, key, 1, message_id=f"{key[3]}-m1")
    found = await verdict(db, ledger, [], [])
    assert found.holds and (found.pruned, found.lost) == (2, 0), found.problems
    await db.execute("DELETE FROM shares WHERE pair_id = 'pair2'")
    found = await verdict(db, ledger, [], [])
    assert not found.holds and (found.pruned, found.lost) == (0, 3), found.problems


async def test_unreported_and_twice_reported_shares_are_found(db: asyncpg.Connection) -> None:
    ledger = Ledger()
    keys: list[Key] = [("client", f"{P}-app{n}", "GDRIVE", f"pair{n}") for n in range(3)]
    for key in keys:
        acked(ledger, key, 1)
        await store(db, key, 1)
    await owe(db, keys[0], 1, status="pending")  # never sent
    await owe(db, keys[1], 1)
    await owe(db, keys[2], 1)
    v2 = Call("PUT", REPORT_V2, 204, f"{P}-app9", {"backupMethod": "X"}, True, 0.0)
    twice = [report(keys[1][1], "pair1", 1.0), report(keys[1][1], "pair1", 2.0)]
    once = [report(keys[2][1], "pair2", 1.0)]
    found = await verdict(db, ledger, [*twice, *once, v2], [])
    assert (found.unreported, found.reported_twice, found.max_reports_of_one_share) == (1, 1, 2)
    assert found.reported_unowed == 1  # the v2 report of a share nobody stored
    assert found.reported_twice_in_crash_window == 0
    assert not found.holds
    # The same repeat right before a crash is the documented window: explained, not a fault.
    crashed = await verdict(db, ledger, [*twice, *once], [1.0 + CRASH_WINDOW / 2])
    assert crashed.reported_twice_in_crash_window == 1
