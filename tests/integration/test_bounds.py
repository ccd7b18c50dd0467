"""Per-client bounds in the store, against the real PostgreSQL: pairs pruned in the statement that
stores a share, methods capped, reads filtered and limited in SQL."""

from __future__ import annotations

import asyncio
import itertools
from collections.abc import AsyncIterator

import pytest

from sharevault.crypto import Identity
from sharevault.db import PERMANENT_ERRORS, Bounds, SealedRow, Store, open_store, refusal_of
from sharevault.schemas import UNKNOWN_METHOD
from sharevault.service.client_shares import lookup_order

PAIRS = 8
METHODS = 4


def share(kind: str, client: str, method: str, pair: str, version: int) -> SealedRow:
    msg = f"{client}-{method}-{pair}-{version}"
    return SealedRow(Identity(kind, client, method, pair), b"\x01k" + msg.encode(), version, msg)


@pytest.fixture
async def store(database_url: str) -> AsyncIterator[Store]:
    async with open_store(database_url, size=3, bounds=Bounds(PAIRS, METHODS)) as s:
        yield s


async def pairs_of(store: Store, client: str, method: str = "GDRIVE") -> list[str]:
    shares = await store.client_shares("custodian", client)
    return [s.pair_id for s in shares if s.backup_method == method]


async def test_pair_id_churn_keeps_the_newest_eight(store: Store) -> None:
    # One client re-backed up under 60 new pair ids, one write each: 8 rows, the newest 8.
    for n in range(60):
        await store.upsert_batch([share("custodian", "churn", "GDRIVE", f"p{n:02d}", 100 + n)])
        assert len(await pairs_of(store, "churn")) == min(n + 1, PAIRS)
    assert await pairs_of(store, "churn") == [f"p{n:02d}" for n in range(59, 51, -1)]


async def test_sixty_pairs_in_one_batch_store_only_the_newest_eight(store: Store) -> None:
    rows = [share("custodian", "burst", "GDRIVE", f"p{n:02d}", 100 + n) for n in range(60)]
    applied = await store.upsert_batch(rows)
    newest = [f"p{n:02d}" for n in range(59, 51, -1)]
    assert applied == {r.message_id for r in rows if r.identity.pair_id in newest}
    assert await pairs_of(store, "burst") == newest


async def test_pruning_keeps_other_methods_clients_and_kinds(store: Store) -> None:
    for n in range(12):
        await store.upsert_batch(
            [
                share("custodian", "a", "GDRIVE", f"g{n}", 100 + n),
                share("client", "a", "GDRIVE", f"c{n}", 100 + n),
            ]
        )
    await store.upsert_batch([share("custodian", "a", "ICLOUD", "i0", 1)])  # oldest of all
    await store.upsert_batch([share("custodian", "b", "GDRIVE", "b0", 1)])
    assert len(await pairs_of(store, "a")) == PAIRS
    assert await pairs_of(store, "a", "ICLOUD") == ["i0"]
    assert await pairs_of(store, "b") == ["b0"]
    clients = await store.client_shares("client", "a")
    assert sorted(s.pair_id for s in clients) == sorted(f"c{n}" for n in range(4, 12))


async def test_a_re_backup_of_an_old_pair_makes_it_the_newest(store: Store) -> None:
    for n in range(PAIRS):
        await store.upsert_batch([share("custodian", "re", "GDRIVE", f"p{n}", 100 + n)])
    # p0 is the oldest; written again with a newer version it stays, and p1 goes instead.
    await store.upsert_batch([share("custodian", "re", "GDRIVE", "p0", 200)])
    await store.upsert_batch([share("custodian", "re", "GDRIVE", "new", 201)])
    kept = await pairs_of(store, "re")
    assert kept[:2] == ["new", "p0"] and "p1" not in kept and len(kept) == PAIRS
    # An old version of a pruned pair, replayed, stays out: eight newer pairs hold the place.
    assert await store.upsert_batch([share("custodian", "re", "GDRIVE", "p1", 101)]) == set()
    assert "p1" not in await pairs_of(store, "re")


async def test_concurrent_batches_never_prune_the_newest(database_url: str) -> None:
    async with (
        open_store(database_url, size=2, bounds=Bounds(PAIRS, METHODS)) as one,
        open_store(database_url, size=2, bounds=Bounds(PAIRS, METHODS)) as two,
    ):
        version = itertools.count(100)
        for _ in range(15):
            a = share("custodian", "race", "GDRIVE", f"a{next(version)}", next(version))
            b = share("custodian", "race", "GDRIVE", f"b{next(version)}", next(version))
            await asyncio.gather(one.upsert_batch([a]), two.upsert_batch([b]))
            kept = await pairs_of(one, "race")
            # Each batch may have missed the other's pair: one too many at most, never the newest.
            assert a.identity.pair_id in kept and b.identity.pair_id in kept
            assert len(kept) <= PAIRS + 1
        last = share("custodian", "race", "GDRIVE", "last", next(version))
        await one.upsert_batch([last])
        kept = await pairs_of(one, "race")
        assert len(kept) == PAIRS and kept[0] == "last"


async def test_a_method_beyond_the_cap_is_refused_by_the_statement(store: Store) -> None:
    methods = [f"M{n}" for n in range(METHODS)]
    await store.upsert_batch([share("custodian", "cap", m, "p", 1) for m in methods])
    with pytest.raises(PERMANENT_ERRORS) as refused:
        await store.upsert_batch([share("custodian", "cap", "EXTRA", "p", 2)])
    assert refusal_of(refused.value) == "methods_per_client"
    assert await store.upsert_batch([share("client", "cap", "EXTRA", "p", 2)])  # its own cap
    # The whole batch fails with it (the worker then stores its shares one by one).
    with pytest.raises(PERMANENT_ERRORS):
        await store.upsert_batch(
            [share("custodian", "cap", "M0", "q", 3), share("custodian", "cap", "EXTRA", "p", 3)]
        )
    # Known methods and other clients go on.
    assert await store.upsert_batch([share("custodian", "cap", "M0", "q", 4)])
    assert await store.upsert_batch([share("custodian", "other", "EXTRA", "p", 4)])
    assert sorted({s.backup_method for s in await store.client_shares("custodian", "cap")}) == (
        methods
    )


async def test_fetch_reads_at_most_the_bounds(database_url: str) -> None:
    # Rows stored before the bounds (or under larger ones) are never all read back at once.
    async with open_store(database_url, size=1, bounds=Bounds(50, 2)) as loose:
        await loose.upsert_batch(
            [share("custodian", "old", m, f"p{n}", n) for n in range(20) for m in ("A", "B")]
        )
    async with open_store(database_url, size=1, bounds=Bounds(3, 2)) as tight:
        shares = await tight.client_shares("custodian", "old")
    assert [s.version for s in shares] == [19, 19, 18, 18, 17, 17]


CASES = [
    (None, "p1"),
    ("ICLOUD", "p1"),
    ("GDRIVE", None),
    ("PASSKEY", None),
    (None, "nope"),
    (None, None),
    ("UNKNOWN", None),
    ("ICLOUD", None),
]


async def test_the_client_lookup_in_sql_follows_lookup_order(store: Store) -> None:
    rows = [
        share("client", "app", "GDRIVE", "p1", 10),
        share("client", "app", "GDRIVE", "p2", 30),
        share("client", "app", "ICLOUD", "p1", 20),
        share("client", "app", UNKNOWN_METHOD, "", 5),
        share("client", "app", UNKNOWN_METHOD, "old", 40),
        share("custodian", "app", "PASSKEY", "p1", 50),  # another kind: never served here
    ]
    await store.upsert_batch(rows)
    everything = await store.client_shares("client", "app")
    for method, pair in CASES:
        expected = lookup_order(everything, method, pair)
        found = await store.client_share("app", method, pair, unknown=UNKNOWN_METHOD)
        assert found == (expected[0] if expected else None), (method, pair)
    assert await store.client_share("nobody", None, None, unknown=UNKNOWN_METHOD) is None
