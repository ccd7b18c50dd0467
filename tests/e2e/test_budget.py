"""The hard budget: every webhook and client route answers within REQUEST_BUDGET while PostgreSQL
stalls (its tables locked, or a black hole that accepts and never answers), and nothing that was
acknowledged is lost."""

from __future__ import annotations

import asyncio
import contextlib
import time
from collections.abc import AsyncIterator, Awaitable, Callable
from typing import Any

import asyncpg
import pytest
from aiohttp import web
from aiohttp.test_utils import TestClient

from sharevault.config import IDENTITY_CHECK_SECONDS, Settings
from tests.support import FakePortal
from tests.support.environment import secret_headers
from tests.support.inprocess import WorkerHandle
from tests.support.portal_fixtures import CLIENT_A, TOKEN_A, bearer, portal_settings
from tests.support.waiting import eventually

pytestmark = pytest.mark.slow

Gateway = TestClient[web.Request, web.Application]
BUDGET = 4.0
# Generous: the machine running the tests is shared and loaded; a missed budget misses by far more.
MARGIN = 2.5


def budget_settings(
    settings_factory: Callable[..., Settings], portal: FakePortal, **overrides: Any
) -> Settings:
    return portal_settings(
        settings_factory,
        portal,
        request_budget=BUDGET,
        commit_wait=2.0,
        publish_timeout=1.0,
        db_timeout=0.5,
        portal_timeout=1.0,
        **overrides,
    )


@contextlib.asynccontextmanager
async def black_hole() -> AsyncIterator[int]:
    """A port that accepts connections and never answers (reads and discards forever)."""
    held: set[asyncio.StreamWriter] = set()

    async def swallow(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        held.add(writer)
        with contextlib.suppress(OSError):
            while await reader.read(65536):
                pass

    server = await asyncio.start_server(swallow, "127.0.0.1", 0)
    try:
        yield int(server.sockets[0].getsockname()[1])
    finally:
        for writer in held:
            writer.transport.abort()
        server.close()
        await server.wait_closed()


async def timed(call: Awaitable[Any]) -> tuple[int, dict[str, Any], dict[str, str], float]:
    started = time.monotonic()
    resp = await call
    body = await resp.json()
    return resp.status, body, dict(resp.headers), time.monotonic() - started


async def every_route(gw: Gateway, n: int) -> dict[str, tuple[int, dict[str, Any], Any, float]]:
    """The four routes at once: two writes (custodian, client) and two reads."""
    client_path = f"/portal/clients/{CLIENT_A}/backup"
    calls = {
        "backup": gw.post(
            "/webhook/backup",
            json={"clientId": "cl-stall", "backupMethod": "GDRIVE", "share": f"s-{n}"},
            headers=secret_headers(),
        ),
        "client_backup": gw.post(
            client_path,
            json={"backupMethod": "PASSKEY", "cipherText": f"c-{n}"},
            headers=bearer(TOKEN_A),
        ),
        "fetch": gw.post(
            "/webhook/backup/fetch", json={"clientId": "cl-stall"}, headers=secret_headers()
        ),
        "client_get": gw.get(
            client_path, params={"backupMethod": "PASSKEY"}, headers=bearer(TOKEN_A)
        ),
    }
    answers = await asyncio.gather(*(timed(c) for c in calls.values()))
    return dict(zip(calls, answers, strict=True))


def assert_held_the_budget(answers: dict[str, tuple[int, dict[str, Any], Any, float]]) -> None:
    for route, (status, body, headers, elapsed) in answers.items():
        assert elapsed < BUDGET + MARGIN, f"{route} answered after {elapsed:.1f}s"
        if route in ("backup", "client_backup"):
            # The broker confirmed: durable in the queue, the commit not seen in time.
            assert (status, body["status"]) == (200, "queued"), (route, status, body)
        else:
            assert status == 503, (route, status, body)
            assert body["error"]["code"] in ("timeout", "database_unavailable")
            assert int(headers["Retry-After"]) >= 1


async def stored(db: asyncpg.Connection, kind: str, client_id: str) -> int:
    return int(
        await db.fetchval(
            "SELECT count(*) FROM shares WHERE kind = $1 AND client_id = $2", kind, client_id
        )
    )


async def test_locked_tables_every_route_answers_within_the_budget(
    settings_factory: Callable[..., Settings],
    fake_portal: FakePortal,
    gateway_factory: Callable[..., Awaitable[Gateway]],
    worker_factory: Callable[..., WorkerHandle],
    database_url: str,
    db: asyncpg.Connection,
) -> None:
    settings = budget_settings(settings_factory, fake_portal)
    worker_factory(settings)
    gw = await gateway_factory(settings)
    before = await every_route(gw, 0)  # all answer while the database does
    assert before["backup"][0] == before["client_backup"][0] == 200
    assert before["backup"][1]["status"] == "committed"

    locker = await asyncpg.connect(database_url)
    try:
        tx = locker.transaction()
        await tx.start()
        await locker.execute("LOCK TABLE shares IN ACCESS EXCLUSIVE MODE")
        locked_at = time.monotonic()
        answers = await every_route(gw, 1)
        # The lock outlived the budget: nothing above could have waited it out.
        assert time.monotonic() - locked_at < BUDGET + MARGIN
        await asyncio.sleep(max(0.0, BUDGET + 1.0 - (time.monotonic() - locked_at)))
        await tx.rollback()
    finally:
        await locker.close()
    assert_held_the_budget(answers)

    # Nothing lost: the shares acknowledged as queued are stored once the lock is gone.
    async def both_stored() -> bool:
        rows = await db.fetch("SELECT message_id FROM shares")
        return {answers["backup"][1]["messageId"], answers["client_backup"][1]["messageId"]} <= {
            r["message_id"] for r in rows
        }

    await eventually(both_stored, timeout=30)
    after = await every_route(gw, 2)  # and the gateway's pool serves again
    assert after["fetch"][0] == after["client_get"][0] == 200


async def test_black_holed_database_every_route_answers_within_the_budget(
    settings_factory: Callable[..., Settings],
    fake_portal: FakePortal,
    gateway_factory: Callable[..., Awaitable[Gateway]],
    worker_factory: Callable[..., WorkerHandle],
    database_url: str,
    db: asyncpg.Connection,
) -> None:
    # The worker reaches the real database; the gateway's every connection goes into the hole.
    worker_factory(budget_settings(settings_factory, fake_portal))
    async with black_hole() as port:
        hole = f"postgresql://postgres@127.0.0.1:{port}/sharevault"
        settings = budget_settings(settings_factory, fake_portal, database_url=hole)
        gw = await gateway_factory(settings)
        answers = await every_route(gw, 1)
        assert_held_the_budget(answers)
        second = await every_route(gw, 2)  # and again, with the first attempts still hanging
        assert_held_the_budget(second)

        async def all_stored() -> bool:
            return (
                await stored(db, "custodian", "cl-stall") == 1
                and await stored(db, "client", CLIENT_A) == 1
            )

        await eventually(all_stored, timeout=30)
        ids = {a[1]["messageId"] for a in (answers["backup"], second["backup"])}
        newest = await db.fetchval(
            "SELECT message_id FROM shares WHERE kind = 'custodian' AND client_id = 'cl-stall'"
        )
        assert newest in ids


async def test_a_hung_portal_identity_check_costs_about_three_seconds(
    settings_factory: Callable[..., Settings],
    fake_portal: FakePortal,
    gateway_factory: Callable[..., Awaitable[Gateway]],
    db: asyncpg.Connection,
) -> None:
    # Portal accepts the identity check and never answers; its own timeout is longer than the
    # identity check's share of the budget (IDENTITY_CHECK_SECONDS), which must bound it.
    settings = portal_settings(settings_factory, fake_portal, portal_timeout=8.0, outbox_lease=20.0)
    gw = await gateway_factory(settings)
    fake_portal.delay = 60.0
    client_path = f"/portal/clients/{CLIENT_A}/backup"
    write, read = await asyncio.gather(
        timed(gw.post(client_path, json={"cipherText": "hung"}, headers=bearer(TOKEN_A))),
        timed(gw.get(client_path, headers=bearer(TOKEN_A))),
    )
    fake_portal.heal()
    for status, body, headers, elapsed in (write, read):
        assert status == 503, (status, body)
        assert body["error"]["code"] == "portal_unavailable"
        assert headers["Retry-After"] == "1"
        assert elapsed < IDENTITY_CHECK_SECONDS + MARGIN, f"answered after {elapsed:.1f}s"
    assert await stored(db, "client", CLIENT_A) == 0  # refused before anything was accepted
