"""The published OpenAPI description, the /docs page, and schemathesis fuzzing the live gateway."""

from __future__ import annotations

import asyncio
import json
import sys
from pathlib import Path
from typing import Any

from aiohttp.test_utils import TestClient
from jsonschema import Draft202012Validator
from openapi_spec_validator import validate

from sharevault.config import Settings
from sharevault.schemas import ReadyAnswer
from tests.support.inprocess import WorkerHandle
from tests.support.portal_fixtures import TOKEN_A

FUZZ_CASES = 1000


async def test_openapi_document_is_valid_and_covers_every_route(
    gateway: TestClient,  # type: ignore[type-arg]
) -> None:
    resp = await gateway.get("/openapi.json")
    assert resp.status == 200
    spec = await resp.json()
    validate(spec)
    assert spec["openapi"].startswith("3.1")
    assert {
        "/webhook/backup",
        "/webhook/backup/fetch",
        "/portal/clients/{clientId}/backup",
        "/healthz",
        "/readyz",
    } <= set(spec["paths"])
    backup = spec["paths"]["/webhook/backup"]["post"]
    assert {"200", "400", "401", "413", "415", "422", "503"} <= set(backup["responses"])


async def test_readyz_answers_what_the_description_says(
    gateway: TestClient,  # type: ignore[type-arg]
) -> None:
    spec = await (await gateway.get("/openapi.json")).json()
    resp = await gateway.get("/readyz")
    assert resp.status == 200
    body = await resp.json()
    documented = spec["paths"]["/readyz"]["get"]["responses"]["200"]["content"]
    schema = {**documented["application/json"]["schema"], "components": spec["components"]}
    assert list(Draft202012Validator(schema).iter_errors(body)) == []
    assert ReadyAnswer.model_validate(body).status == "ready"


async def test_docs_page_renders_swagger_ui(gateway: TestClient) -> None:  # type: ignore[type-arg]
    page = await gateway.get("/docs/")
    assert page.status == 200
    html = await page.text()
    assert "/openapi.json" in html and "swagger-ui-bundle.js" in html
    asset = await gateway.get("/docs/swagger-ui-bundle.js")
    assert asset.status == 200
    assert len(await asset.read()) > 100_000


async def run_schemathesis(url: str, report: Path, *args: str) -> dict[str, Any]:
    proc = await asyncio.create_subprocess_exec(
        str(Path(sys.executable).with_name("schemathesis")),
        "--config-file",
        str(Path(__file__).with_name("schemathesis.toml")),
        "run",
        f"{url}/openapi.json",
        "--checks",
        "all",
        # Every check but one: a body the schema allows can still exceed MAX_BODY_BYTES (413 by
        # design; JSON Schema cannot bound a whole body's size), and a path the generator does
        # not percent-encode reaches the gateway as another client id. Those are refused with a
        # 4xx JSON error, which is what the other checks hold the gateway to (413 counts as a
        # refusal of a schema-violating body too: schemathesis.toml).
        "--exclude-checks",
        "positive_data_acceptance",
        "--generation-database",
        "none",
        "--no-color",
        "--report",
        "json",
        "--report-json-path",
        str(report),
        *args,
        stdout=asyncio.subprocess.PIPE,
        stderr=asyncio.subprocess.STDOUT,
    )
    out, _ = await proc.communicate()
    result: dict[str, Any] = json.loads(report.read_text())
    assert proc.returncode == 0, out.decode()[-4000:]
    return result


async def test_fuzzing_finds_no_5xx_and_no_spec_violation(
    live_gateway: str,
    worker: WorkerHandle,
    settings: Settings,
    tmp_path: Path,
) -> None:
    secret = settings.secret("webhook_secret")
    with_secret = await run_schemathesis(
        live_gateway,
        tmp_path / "auth.json",
        "-n",
        "250",
        "-H",
        f"X-Webhook-Secret: {secret}",
        "-H",
        f"Authorization: Bearer {TOKEN_A}",
    )
    without = await run_schemathesis(live_gateway, tmp_path / "anon.json", "-n", "150")
    cases = [r["test_cases"]["generated"] for r in (with_secret, without)]
    assert sum(cases) >= FUZZ_CASES, cases
    for result in (with_secret, without):
        assert result["failures"] == [] and result["errors"] == []
    assert worker.acked > 0, "valid generated shares should have been stored"
