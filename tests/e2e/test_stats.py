"""`sharevault stats`: the figures it prints are the database's and the broker's."""

from __future__ import annotations

import json
from collections.abc import Callable
from typing import Any

import asyncpg

from sharevault.config import Settings
from sharevault.crypto import Identity, Keyring
from sharevault.db import SealedRow, open_store
from sharevault.messages import DEAD_KEY, REASON, Envelope, bearer_identity
from sharevault.wiring import broker_of
from tests.support.processes import outage_env, run_cli
from tests.support.sharing import publish_share, seal_message

IDENTITIES = [
    Identity("custodian", "c1", "GDRIVE", ""),
    Identity("custodian", "c2", "GDRIVE", "p2"),
    Identity("custodian", "c3", "GDRIVE-SECP256K1", ""),
    Identity("custodian", "c4", "UNKNOWN", ""),
    Identity("client", "a1", "PASSKEY", "p1"),
    Identity("client", "a2", "PASSKEY", "p2"),
    Identity("client", "a3", "ICLOUD", ""),
]


async def seed_database(settings: Settings, db: asyncpg.Connection) -> None:
    keyring = Keyring(settings.keyring)
    rows = []
    for n, identity in enumerate(IDENTITIES):
        sealed = keyring.seal(b"stats-share", identity, 1, f"m{n}")
        report = identity.kind == "client"
        bound = bearer_identity(identity)
        bearer = keyring.seal(b"stats-bearer", bound, 1, f"m{n}") if report else None
        rows.append(SealedRow(identity, sealed, 1, f"m{n}", "v2" if report else None, bearer))
    async with open_store(settings.database_url.get_secret_value(), size=1) as store:
        await store.upsert_batch(rows)
    await db.execute(
        "UPDATE outbox SET status = 'sent', bearer_sealed = NULL WHERE client_id = 'a1'"
    )
    await db.execute(
        "UPDATE outbox SET created_at = now() - interval '1 hour' WHERE client_id = 'a2'"
    )


async def fill_queues(settings: Settings, live: int, dead: int) -> None:
    async with broker_of(settings, name="test-stats") as broker:
        await broker.wait_ready(10)
        for n in range(live):
            message = seal_message(settings, IDENTITIES[0], b"queued-share", 100 + n)
            await publish_share(broker, message, timeout=5)
        for n in range(dead):
            message = seal_message(settings, IDENTITIES[1], b"dead-share", 200 + n)
            # JSON, as an earlier version published.
            body = message.model_dump_json().encode()
            parked = Envelope(body, message.message_id, {REASON: "undecodable"}, "application/json")
            await broker.publisher.publish(
                parked, routing_key=DEAD_KEY, exchange=broker.topology.recover, timeout=5
            )


async def stats_json(settings: Settings, **env: str) -> tuple[int, dict[str, Any], str]:
    code, out, err = await run_cli("stats", "--json", env=outage_env(settings, **env))
    data: dict[str, Any] = json.loads(out)
    return code, data, err


async def test_stats_json_matches_the_database_and_the_broker(
    settings_factory: Callable[..., Settings], db: asyncpg.Connection
) -> None:
    # No worker runs, and queued messages stay in the live queue for the whole test.
    settings = settings_factory(live_ttl=60)
    await seed_database(settings, db)
    await fill_queues(settings, live=5, dead=2)
    code, data, err = await stats_json(settings)
    assert code == 0, err
    assert data["errors"] == {}

    by_method = await db.fetch(
        "SELECT kind, backup_method, count(*) AS n FROM shares GROUP BY 1, 2 ORDER BY 1, 2"
    )
    assert data["shares"]["by_method"] == [
        {"kind": r["kind"], "backup_method": r["backup_method"], "count": r["n"]} for r in by_method
    ]
    assert data["shares"]["total"] == await db.fetchval("SELECT count(*) FROM shares") == 7
    assert data["shares"]["by_kind"] == {"client": 3, "custodian": 4}
    outbox = {
        r["status"]: r["n"]
        for r in await db.fetch("SELECT status, count(*) AS n FROM outbox GROUP BY status")
    }
    assert {s: v["count"] for s, v in data["outbox"]["by_status"].items()} == outbox
    assert outbox == {"pending": 2, "sent": 1}
    assert data["outbox"]["pending"] == 2
    assert 3599 < data["outbox"]["pending_oldest_seconds"] < 3700
    assert data["keys"] == {"current": "v2:ka", "shares": {"v2:ka": 7}, "outbox": {"v2:ka": 2}}

    queues = {q["role"]: q for q in data["queues"]}
    topology = broker_of(settings, name="names").topology
    assert queues["live"] == {
        "name": topology.shares,
        "role": "live",
        "messages": 5,
        "consumers": 0,
    }
    assert queues["backlog"]["messages"] == 0
    assert queues["dead letters"]["messages"] == data["dead_letters"] == 2
    assert len([r for r in queues if r.startswith("retry ")]) == len(settings.retry_delays)
    journal = data["journal"]
    assert journal["name"] == topology.journal
    assert (journal["max_age"], journal["first_offset"]) == (settings.journal_max_age, 0)
    assert journal["oldest"] is not None and journal["oldest"].endswith("Z")

    # On a terminal: the same figures as tables.
    code, out, err = await run_cli("stats", env=outage_env(settings))
    assert code == 0, err
    assert "GDRIVE-SECP256K1" in out and topology.dead in out and "dead letters" in out


async def test_stats_still_reports_the_database_when_the_broker_is_down(
    settings_factory: Callable[..., Settings], db: asyncpg.Connection
) -> None:
    settings = settings_factory()
    await seed_database(settings, db)
    code, data, err = await stats_json(
        settings, SHAREVAULT_AMQP_URL="amqp://guest:guest@127.0.0.1:1/"
    )
    assert code == 1
    assert "broker" in data["errors"] and "broker" in err
    assert data["queues"] is None and data["shares"]["total"] == 7


async def test_looks_under_a_fresh_prefix_create_no_queue_and_need_no_secret(
    settings: Settings,
) -> None:
    # A look never declares: `stats` and `dlq list` against a prefix nothing uses leave the broker
    # as it was (stats once declared the whole topology, 8 queues, to count them). Neither needs
    # the webhook secret or the keyring.
    env = outage_env(settings)
    del env["SHAREVAULT_WEBHOOK_SECRET"], env["SHAREVAULT_ENCRYPTION_KEYS"]
    code, out, err = await run_cli("stats", "--json", env=env)
    assert code == 0, err
    data = json.loads(out)
    assert data["queues"] and all(q["messages"] is None for q in data["queues"])
    assert data["journal"]["first_offset"] is None
    assert data["keys"]["current"] is None  # no keyring here: the counts by key id still show
    code, out, err = await run_cli("dlq", "list", "--json", env=env)
    assert code == 0, err
    assert json.loads(out)["total"] == 0
    async with broker_of(settings, name="look", robust=False, declare=False) as broker:
        for name in broker.topology.queues:
            assert await broker.admin.queue_counts(name) is None, f"{name} was created"
