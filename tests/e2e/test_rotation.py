"""`sharevault keys rotate` while Portal keeps writing and reading, and after a hard stop."""

from __future__ import annotations

import asyncio
import base64
import json
import signal
import sys
import time
from collections.abc import Awaitable, Callable
from typing import Any

import asyncpg
from aiohttp import web
from aiohttp.test_utils import TestClient

from sharevault.config import Settings
from sharevault.crypto import Identity, Keyring
from sharevault.db import SealedRow, open_store
from sharevault.messages import bearer_identity
from tests.support.backupload import BackupLoad, assert_nothing_lost, share_text
from tests.support.environment import KEY_A, KEY_B, process_env, secret_headers
from tests.support.inprocess import WorkerHandle
from tests.support.leakcheck import sensitive, subprocess_log
from tests.support.processes import run_cli
from tests.support.sharing import legacy_seal

Client = TestClient[web.Request, web.Application]
OLD = Keyring([("kb", base64.b64decode(KEY_B))])
NEW = Keyring([("ka", base64.b64decode(KEY_A))])
SEED_SHARE = "rotation-seed-share-secret-"
SEED_BEARER = "rotation-seed-bearer-secret-"
sensitive(SEED_SHARE, SEED_BEARER)


def seeded(n: int) -> tuple[Identity, str]:
    return Identity("custodian", f"seed-{n:05d}", "GDRIVE", ""), f"{SEED_SHARE}{n}:" + "s" * 200


def seed_rows(count: int, clients: int, load_ids: list[str]) -> list[SealedRow]:
    """Shares sealed under the old key: custodian ones (in the legacy format, as before seals
    bound their message), client ones owing Portal a report (with a sealed bearer), and the
    load's own identities at a version any new write beats."""
    rows = []
    for n in range(count):
        identity, text = seeded(n)
        sealed = legacy_seal("kb", base64.b64decode(KEY_B), text.encode(), identity)
        rows.append(SealedRow(identity, sealed, 1, f"seed-{n}"))
    for n in range(clients):
        identity = Identity("client", f"app-{n:04d}", "PASSKEY", f"pair-{n}")
        bound = bearer_identity(identity)
        bearer = OLD.seal(f"{SEED_BEARER}{n}".encode(), bound, 1, f"app-{n}")
        share = OLD.seal(f"{SEED_SHARE}client-{n}".encode(), identity, 1, f"app-{n}")
        rows.append(SealedRow(identity, share, 1, f"app-{n}", "v3", bearer))
    for client_id in load_ids:
        identity = Identity("custodian", client_id, "GDRIVE", "")
        sealed = OLD.seal(share_text(client_id, 0).encode(), identity, 1, f"load-{client_id}")
        rows.append(SealedRow(identity, sealed, 1, f"load-{client_id}"))
    return rows


async def seed(dsn: str, rows: list[SealedRow]) -> None:
    async with open_store(dsn, size=1) as store:
        for start in range(0, len(rows), 500):
            await store.upsert_batch(rows[start : start + 500])


async def fetch_one(gateway: Client, client_id: str) -> list[str]:
    resp = await gateway.post(
        "/webhook/backup/fetch", json={"clientId": client_id}, headers=secret_headers()
    )
    assert resp.status == 200
    shares: list[str] = (await resp.json())["backupShares"]
    return shares


async def read_while_rotating(gateway: Client, load: BackupLoad, stop: asyncio.Event) -> int:
    """Fetch as Portal does, all along: a seeded share comes back exactly, a written one never
    older than what was acknowledged before the fetch. Returns how many fetches it checked."""
    checked = 0
    load_ids = load.client_ids()
    while not stop.is_set():
        identity, text = seeded(checked * 37 % 400)
        assert await fetch_one(gateway, identity.client_id) == [text]
        client_id = load_ids[checked % len(load_ids)]
        acked_before = load.acked.get(client_id, 0)
        [served] = await fetch_one(gateway, client_id)
        assert int(served.split(":")[1]) >= acked_before, "served an older share than acked"
        checked += 1
    return checked


async def key_status(settings: Settings) -> dict[str, Any]:
    code, out, err = await run_cli("keys", "status", "--json", env=process_env(settings))
    assert code == 0, err
    status: dict[str, Any] = json.loads(out)
    return {k["key_id"]: (k["shares"], k["bearers"]) for k in status["keys"]}


async def assert_all_under_new_key(db: asyncpg.Connection, expected_shares: int) -> None:
    """Every share and pending bearer opens with the new key alone; seeded ones are unchanged."""
    rows = await db.fetch("SELECT * FROM shares")
    assert len(rows) == expected_shares
    for row in rows:
        identity = Identity(row["kind"], row["client_id"], row["backup_method"], row["pair_id"])
        assert row["key_id"] == "v2:ka"
        text = NEW.open(row["sealed"], identity, row["version"], row["message_id"]).decode()
        if row["client_id"].startswith("seed-"):
            assert text == seeded(int(row["client_id"][5:]))[1]
    for row in await db.fetch("SELECT * FROM outbox WHERE bearer_sealed IS NOT NULL"):
        identity = Identity("client", row["client_id"], row["backup_method"], row["pair_id"])
        assert row["key_id"] == "v2:ka"
        assert (
            NEW.open(row["bearer_sealed"], bearer_identity(identity), None, row["message_id"])
            .decode()
            .startswith(SEED_BEARER)
        )


async def test_rotation_under_load_leaves_every_share_readable_and_none_stale(
    settings: Settings,
    gateway: Client,
    worker: WorkerHandle,
    db: asyncpg.Connection,
    database_url: str,
) -> None:
    load = BackupLoad(gateway, "rotload", identities=10)
    await seed(database_url, seed_rows(1500, 40, load.client_ids()))
    assert await key_status(settings) == {"ka": (0, 0), "kb": (1550, 40)}
    stop_reading = asyncio.Event()
    async with load:
        await load.until(lambda: load.total_acked >= 20)
        reader = asyncio.create_task(read_while_rotating(gateway, load, stop_reading))
        acked_before = load.total_acked
        code, out, err = await run_cli(
            "keys", "rotate", "--batch-size", "50", "--json", env=process_env(settings)
        )
        acked_during = load.total_acked - acked_before
        stop_reading.set()
        checked = await reader
    assert code == 0, err
    summary = json.loads(out)
    assert summary["remaining"] == 0 and summary["unreadable"] == {"shares": 0, "outbox": 0}
    assert summary["rewrapped"]["outbox"] == 40
    # Load identities rewritten (under the new key) before the rotation reached them need none.
    assert 1540 <= summary["rewrapped"]["shares"] <= 1550
    assert acked_during > 0 and checked > 0, "the rotation did not overlap the load"
    assert load.statuses.keys() == {200}
    await assert_nothing_lost(lambda: asyncpg.connect(database_url), NEW, load)
    await assert_all_under_new_key(db, 1550)
    assert await key_status(settings) == {"ka": (1550, 40), "kb": (0, 0)}


SLOW_REWRAP = """
CREATE FUNCTION slow_rewrap() RETURNS trigger LANGUAGE plpgsql AS $$
BEGIN PERFORM pg_sleep(0.004); RETURN NEW; END $$;
CREATE TRIGGER slow_rewrap BEFORE UPDATE ON shares FOR EACH ROW
WHEN (OLD.key_id IS DISTINCT FROM NEW.key_id) EXECUTE FUNCTION slow_rewrap();
"""


async def until(check: Callable[[], Awaitable[bool]], timeout: float = 30) -> None:
    deadline = time.monotonic() + timeout
    while not await check():
        assert time.monotonic() < deadline, "condition not met in time"
        await asyncio.sleep(0.02)


async def test_a_killed_rotation_leaves_every_row_readable_and_resumes(
    settings: Settings, db: asyncpg.Connection, database_url: str
) -> None:
    await seed(database_url, seed_rows(600, 10, []))
    await db.execute(SLOW_REWRAP)  # ~2.4 s of re-wrapping: time to pull the plug midway
    log = subprocess_log("rotate-key")
    proc = await asyncio.create_subprocess_exec(
        sys.executable,
        "-m",
        "sharevault",
        "keys",
        "rotate",
        "--batch-size",
        "40",
        env=process_env(settings),
        stdout=log,
        stderr=log,
    )

    async def some_done() -> bool:
        return bool(await db.fetchval("SELECT count(*) >= 120 FROM shares WHERE key_id = 'v2:ka'"))

    await until(some_done)
    proc.send_signal(signal.SIGKILL)
    await proc.wait()
    log.close()
    counts = await key_status(settings)
    assert counts["ka"][0] >= 120 and counts["kb"][0] > 0, counts
    assert counts["ka"][0] + counts["kb"][0] == 610
    # Half done is a consistent state: each row is whole under one key or the other.
    both = Keyring([("ka", base64.b64decode(KEY_A)), ("kb", base64.b64decode(KEY_B))])
    for row in await db.fetch("SELECT * FROM shares"):
        identity = Identity(row["kind"], row["client_id"], row["backup_method"], row["pair_id"])
        assert Keyring.key_id_of(row["sealed"]) == row["key_id"]
        both.open(row["sealed"], identity, row["version"], row["message_id"])
    await db.execute("DROP TRIGGER slow_rewrap ON shares")
    code, out, err = await run_cli("keys", "rotate", "--json", env=process_env(settings))
    assert code == 0, err
    summary = json.loads(out)
    assert summary["to_rewrap"] == {"shares": counts["kb"][0], "outbox": counts["kb"][1]}
    assert summary["rewrapped"] == summary["to_rewrap"] and summary["remaining"] == 0
    await assert_all_under_new_key(db, 610)
    # Nothing left: a third run (under the old name, a hidden alias) has nothing to do.
    code, out, _ = await run_cli("rotate-key", "--json", env=process_env(settings))
    assert code == 0 and json.loads(out)["to_rewrap"] == {"shares": 0, "outbox": 0}

    # A row under a key the keyring lost: status flags it, rotation leaves it and fails.
    stranger = Keyring([("klost", b"L" * 32)])
    identity, text = seeded(9999)
    sealed = stranger.seal(text.encode(), identity, 1, "x")
    await seed(database_url, [SealedRow(identity, sealed, 1, "x")])
    code, out, err = await run_cli("keys", "status", "--json", env=process_env(settings))
    assert code == 1 and "'klost'" in err and "cannot be opened" in err
    assert {
        "key_id": "klost",
        "shares": 1,
        "bearers": 0,
        "in_keyring": False,
        "current": False,
        "legacy": 0,
    } in (json.loads(out)["keys"])
    code, out, err = await run_cli("keys", "rotate", "--json", env=process_env(settings))
    assert code == 1 and json.loads(out)["unreadable"] == {"shares": 1, "outbox": 0}
    lost = await db.fetchval("SELECT key_id FROM shares WHERE client_id = 'seed-09999'")
    assert lost == "v2:klost"
