"""sharevault.portal against the fake Portal over real HTTP: answers, faults, retries, the CLI."""

from __future__ import annotations

import asyncio
import hashlib
import sys
from collections.abc import AsyncIterator, Callable

import aiohttp
import pytest

from sharevault.config import Settings
from sharevault.portal import (
    REPORT_V1,
    REPORT_V2,
    REPORT_V3,
    WHOAMI,
    PortalClient,
    PortalRejected,
    PortalUnavailable,
    with_retries,
)
from sharevault.service.client_auth import PortalBearerAuthenticator
from sharevault.service.errors import ApiError
from tests.support import FakePortal
from tests.support.environment import WEBHOOK_SECRET, process_env
from tests.support.portal_fixtures import CLIENT_A, CLIENT_B, PORTAL_API_KEY, TOKEN_A, TOKEN_B


@pytest.fixture
async def portal(fake_portal: FakePortal) -> AsyncIterator[PortalClient]:
    async with PortalClient(fake_portal.url, timeout=2.0) as client:
        yield client


async def test_whoami_and_both_reports(fake_portal: FakePortal, portal: PortalClient) -> None:
    assert await portal.whoami(TOKEN_A) == CLIENT_A
    assert await portal.whoami(TOKEN_B) == CLIENT_B
    with pytest.raises(PortalRejected) as refused:
        await portal.whoami("not-a-token")
    assert refused.value.status == 401
    assert await portal.report_stored_v3(TOKEN_A, ["p1"]) == 200
    assert await portal.report_stored_v2(TOKEN_A, "GDRIVE") == 204
    v3, v2 = fake_portal.reports()
    assert (v3.path, v3.client_id, v3.body) == (
        REPORT_V3,
        CLIENT_A,
        {"status": "STORED_CLIENT_BACKUP_SHARE", "backupSharePairIds": ["p1"]},
    )
    assert (v2.path, v2.body) == (REPORT_V2, {"success": True, "backupMethod": "GDRIVE"})


async def test_no_method_is_reported_without_one(
    fake_portal: FakePortal, portal: PortalClient
) -> None:
    """UNKNOWN is our storage key, not a Portal method: never sent as one."""
    assert await portal.report_stored_v2(TOKEN_A, "UNKNOWN") == 204
    [call] = fake_portal.reports()
    assert (call.path, call.body) == (REPORT_V1, {"success": True})


async def test_faults_are_classified(fake_portal: FakePortal, portal: PortalClient) -> None:
    fake_portal.fail(429, times=1, retry_after=7)
    with pytest.raises(PortalUnavailable) as limited:
        await portal.whoami(TOKEN_A)
    assert (limited.value.status, limited.value.retry_after) == (429, 7.0)
    fake_portal.fail(502, times=1)
    with pytest.raises(PortalUnavailable) as outage:
        await portal.report_stored_v3(TOKEN_A, ["p"])
    assert (outage.value.status, outage.value.retry_after) == (502, None)
    fake_portal.fail(400, times=1)
    with pytest.raises(PortalRejected):
        await portal.report_stored_v2(TOKEN_A, "GDRIVE")
    # Slower than the timeout counts as unavailable, and says nothing secret.
    fake_portal.delay = 5.0
    async with PortalClient(fake_portal.url, timeout=0.2) as impatient:
        with pytest.raises(PortalUnavailable) as slow:
            await impatient.whoami(TOKEN_A)
    fake_portal.heal()
    assert TOKEN_A not in str(slow.value)
    async with PortalClient("http://127.0.0.1:9", timeout=1.0) as nowhere:
        with pytest.raises(PortalUnavailable):
            await nowhere.whoami(TOKEN_A)


async def test_retries_honour_retry_after(fake_portal: FakePortal, portal: PortalClient) -> None:
    fake_portal.fail(503, times=1, retry_after=1, path=WHOAMI)
    assert await with_retries(lambda: portal.whoami(TOKEN_A), attempts=3, max_wait=2) == CLIENT_A
    first, second = fake_portal.calls_to(WHOAMI)
    assert (first.status, second.status) == (503, 200)
    # The backoff alone would wait at most 0.2 s here.
    assert second.at - first.at >= 1.0
    # A Retry-After longer than the caller can wait stops at once and is handed up.
    fake_portal.fail(429, times=1, retry_after=30, path=WHOAMI)
    with pytest.raises(PortalUnavailable) as exc:
        await with_retries(lambda: portal.whoami(TOKEN_A), attempts=3, max_wait=2)
    assert exc.value.retry_after == 30.0
    assert len(fake_portal.calls_to(WHOAMI)) == 3


async def test_verdicts_are_cached_by_hash_and_shared(
    fake_portal: FakePortal, portal: PortalClient
) -> None:
    auth = PortalBearerAuthenticator(portal, ttl=0.3)
    owners = await asyncio.gather(*(auth.owner_of(TOKEN_A) for _ in range(10)))
    assert owners == [CLIENT_A] * 10
    assert await auth.owner_of("unknown-token") is None
    assert await auth.owner_of("unknown-token") is None
    assert len(fake_portal.calls_to(WHOAMI)) == 2
    assert TOKEN_A.encode() not in repr(auth._verdicts).encode()
    await asyncio.sleep(0.35)
    assert await auth.owner_of(TOKEN_A) == CLIENT_A
    assert len(fake_portal.calls_to(WHOAMI)) == 3
    fake_portal.fail(503, retry_after=4, path=WHOAMI)
    with pytest.raises(ApiError) as down:
        await auth.owner_of(TOKEN_B)
    assert (down.value.status, down.value.headers["Retry-After"]) == (503, "4")


async def run_cli(*args: str, env: dict[str, str]) -> tuple[int, str, str]:
    proc = await asyncio.create_subprocess_exec(
        sys.executable,
        "-m",
        "sharevault",
        *args,
        env=env,
        stdout=asyncio.subprocess.PIPE,
        stderr=asyncio.subprocess.PIPE,
    )
    out, err = await asyncio.wait_for(proc.communicate(), 30)
    return proc.returncode or 0, out.decode(), err.decode()


async def test_register_webhook_prints_the_answer_never_the_secrets(
    fake_portal: FakePortal, settings_factory: Callable[..., Settings]
) -> None:
    settings = settings_factory(portal_api_url=fake_portal.url)
    url = "https://custody.example.com/webhook"
    env = process_env(settings, SHAREVAULT_PORTAL_API_KEY=PORTAL_API_KEY)
    code, out, err = await run_cli("register-webhook", "--url", url, env=env)
    assert code == 0, err
    assert out.startswith("Portal answered HTTP 200")
    assert url in out
    secret_hash = hashlib.sha256(WEBHOOK_SECRET.encode()).hexdigest()
    assert fake_portal.webhooks == [{"webhook": url, "secret_sha256": secret_hash}]
    for text in (out, err):
        assert PORTAL_API_KEY not in text and WEBHOOK_SECRET not in text

    wrong = process_env(settings, SHAREVAULT_PORTAL_API_KEY="wrong-key-0000000000")
    code, out, err = await run_cli("register-webhook", "--url", url, env=wrong)
    assert code == 1 and "HTTP 401" in err
    code, _, err = await run_cli("register-webhook", "--url", url, env=process_env(settings))
    assert code == 2 and "SHAREVAULT_PORTAL_API_KEY is required" in err


async def test_fake_portal_runs_standalone() -> None:
    proc = await asyncio.create_subprocess_exec(
        sys.executable,
        "-m",
        "tests.support.fake_portal",
        "--client",
        f"{TOKEN_A}={CLIENT_A}",
        stdout=asyncio.subprocess.PIPE,
    )
    try:
        assert proc.stdout is not None
        line = (await asyncio.wait_for(proc.stdout.readline(), 15)).decode()
        url = line.rsplit(" ", 1)[-1].strip()
        async with PortalClient(url, timeout=2.0) as portal, aiohttp.ClientSession(url) as control:
            assert await portal.whoami(TOKEN_A) == CLIENT_A
            # Driven from outside: register a client, switch a fault on, read the record.
            await control.post("/_fake/clients", json={"token": TOKEN_B, "clientId": CLIENT_B})
            assert await portal.whoami(TOKEN_B) == CLIENT_B
            fault = {"status": 503, "times": 1, "retryAfter": 2, "path": WHOAMI}
            await control.post("/_fake/faults", json=fault)
            with pytest.raises(PortalUnavailable) as down:
                await portal.whoami(TOKEN_A)
            assert down.value.retry_after == 2.0
            calls = await (await control.get("/_fake/calls")).json()
            assert [(c["client_id"], c["status"]) for c in calls] == [
                (CLIENT_A, 200),
                (CLIENT_B, 200),
                (CLIENT_A, 503),
            ]
    finally:
        proc.kill()
        await proc.wait()
