"""The versioned upsert against the real PostgreSQL."""

from __future__ import annotations

from collections.abc import AsyncIterator

import asyncpg
import pytest

from sharevault.crypto import Identity
from sharevault.store import COMMIT_CHANNEL, SealedRow, Store, open_store

ID = Identity("custodian", "cl-1", "GDRIVE", "p1")


def row(version: int, msg: str, data: bytes = b"\x01k1", identity: Identity = ID) -> SealedRow:
    return SealedRow(identity, data + msg.encode(), version, msg)


@pytest.fixture
async def store(database_url: str) -> AsyncIterator[Store]:
    async with open_store(database_url, size=2) as s:
        yield s


async def test_newer_wins_older_and_duplicates_never_overwrite(store: Store) -> None:
    assert await store.upsert_batch([row(10, "m10")]) == {"m10"}
    assert await store.upsert_batch([row(20, "m20")]) == {"m20"}
    assert await store.upsert_batch([row(15, "m15")]) == set()  # older: refused
    assert await store.upsert_batch([row(20, "m20")]) == set()  # duplicate: no change
    assert await store.stored_version(ID) == (20, "m20")
    [stored] = await store.client_shares("custodian", "cl-1")
    assert stored.sealed.endswith(b"m20")


async def test_equal_versions_are_ordered_by_message_id(store: Store) -> None:
    await store.upsert_batch([row(5, "b")])
    assert await store.upsert_batch([row(5, "a")]) == set()
    assert await store.upsert_batch([row(5, "c")]) == {"c"}


async def test_one_batch_with_the_same_identity_twice_keeps_the_newest(store: Store) -> None:
    other = Identity("custodian", "cl-1", "ICLOUD", "")
    applied = await store.upsert_batch(
        [row(3, "m3"), row(9, "m9"), row(4, "m4"), row(1, "o1", identity=other)]
    )
    assert applied == {"m9", "o1"}
    assert await store.stored_version(ID) == (9, "m9")
    shares = await store.client_shares("custodian", "cl-1")
    assert [s.message_id for s in shares] == ["m9", "o1"]  # newest first


async def test_commit_notifies_every_settled_message(store: Store, database_url: str) -> None:
    conn = await asyncpg.connect(database_url)
    got: list[str] = []
    await conn.add_listener(COMMIT_CHANNEL, lambda *args: got.extend(str(args[3]).split(",")))
    try:
        await store.upsert_batch([row(3, "m3"), row(9, "m9")])
        await conn.execute("SELECT 1")  # let the notification arrive
        for _ in range(50):
            if got:
                break
            await conn.execute("SELECT pg_sleep(0.01)")
        assert sorted(got) == ["m3", "m9"]
    finally:
        await conn.close()
