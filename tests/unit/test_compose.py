"""compose.yaml and its files, without a Docker engine: the compose specification's schema, every
setting reachable from .env.example, secrets from files, one image, and what the stack exposes."""

from __future__ import annotations

import json
import re
import subprocess
from importlib import resources
from pathlib import Path
from typing import Any

import pytest
import yaml
from jsonschema import Draft202012Validator

from sharevault.config import Settings

ROOT = Path(__file__).resolve().parents[2]
DEPLOY = ROOT / "deploy"
COMPOSE_FILES = sorted(ROOT.glob("compose*.yaml")) + sorted(ROOT.glob("docker-compose*.y*ml"))
# Settings read from files (Docker-secrets style), never written into .env.
SECRET_SETTINGS = {"WEBHOOK_SECRET", "WEBHOOK_SECRET_PREVIOUS", "ENCRYPTION_KEYS", "PORTAL_API_KEY"}


def load(path: Path) -> dict[str, Any]:
    loaded: dict[str, Any] = yaml.safe_load(path.read_text())
    return loaded


@pytest.fixture(scope="module")
def compose() -> dict[str, Any]:
    return load(ROOT / "compose.yaml")


@pytest.fixture(scope="module")
def env_example() -> str:
    return (ROOT / ".env.example").read_text()


def compose_spec_schema() -> dict[str, Any]:
    """The compose specification's JSON schema, as check-jsonschema vendors it (dev dependency)."""
    vendored = resources.files("check_jsonschema") / "builtin_schemas/vendor/compose-spec.json"
    schema: dict[str, Any] = json.loads(vendored.read_text())
    return schema


@pytest.mark.parametrize("path", COMPOSE_FILES, ids=lambda p: p.name)
def test_compose_files_follow_the_compose_specification(path: Path) -> None:
    validator = Draft202012Validator(compose_spec_schema())
    errors = [
        f"{'/'.join(map(str, e.absolute_path))}: {e.message}"
        for e in validator.iter_errors(load(path))
    ]
    assert errors == []


def test_the_schema_check_can_fail() -> None:
    broken = {"services": {"gateway": {"image": "x", "stop_grace_period": 30, "portz": []}}}
    assert list(Draft202012Validator(compose_spec_schema()).iter_errors(broken))


def test_every_setting_is_in_env_example(env_example: str) -> None:
    """A new field of Settings needs its line in .env.example (a secret: its file in secrets/)."""
    assigned = set(re.findall(r"^#?SHAREVAULT_([A-Z0-9_]+)=", env_example, re.MULTILINE))
    as_files = set(re.findall(r"secrets/SHAREVAULT_([A-Z0-9_]+)\b", env_example))
    fields = {name.upper() for name in Settings.model_fields}
    missing = sorted(f for f in fields if f not in (as_files if f in SECRET_SETTINGS else assigned))
    assert missing == [], f"add to .env.example: {missing}"
    assert not SECRET_SETTINGS & assigned, "secrets belong in secrets/, not in .env"
    unknown = sorted(assigned - fields)
    assert unknown == [], f".env.example names settings that do not exist: {unknown}"


def test_the_check_sees_a_missing_setting(env_example: str) -> None:
    without = env_example.replace("#SHAREVAULT_OUTBOX_KEEP=", "#OUTBOX_KEEP=")
    assert "OUTBOX_KEEP" not in re.findall(r"^#?SHAREVAULT_([A-Z0-9_]+)=", without, re.MULTILINE)


def sharevault_services(compose: dict[str, Any]) -> dict[str, dict[str, Any]]:
    return {n: s for n, s in compose["services"].items() if "sharevault" in str(s.get("image"))}


def test_one_image_built_once_and_reused(compose: dict[str, Any]) -> None:
    ours = sharevault_services(compose)
    assert {"migrate", "gateway", "worker"} <= set(ours)
    assert len({s["image"] for s in ours.values()}) == 1
    builders = [name for name, s in compose["services"].items() if "build" in s]
    assert builders == ["gateway"]
    assert all(s["pull_policy"] == "never" for n, s in ours.items() if n != "gateway")


def test_settings_and_secrets_reach_every_sharevault_service(compose: dict[str, Any]) -> None:
    for name, service in sharevault_services(compose).items():
        assert service["env_file"] == [{"path": ".env", "required": False}], name
        env = service["environment"]
        for secret in SECRET_SETTINGS:
            path = env[f"SHAREVAULT_{secret}_FILE"]
            assert path == f"/run/secrets/sharevault/SHAREVAULT_{secret}", (name, secret)
            assert f"SHAREVAULT_{secret}" not in env, (name, secret)
        assert "./secrets:/run/secrets/sharevault:ro" in service["volumes"], name


def test_no_fixed_credentials_and_no_required_interpolation() -> None:
    lines = (ROOT / "compose.yaml").read_text().splitlines()
    text = "\n".join(line for line in lines if not line.lstrip().startswith("#"))
    assert "sharevault:sharevault" not in text
    # ${VAR:?} makes compose refuse every command, `keys generate` included, until VAR is set.
    assert ":?" not in text and not re.search(r"\$\{[A-Z0-9_]+\?", text)
    assert "${POSTGRES_PASSWORD:-}" in text and "${RABBITMQ_PASSWORD:-}" in text


def test_the_gateway_listens_on_localhost_unless_the_tls_proxy_fronts_it(
    compose: dict[str, Any],
) -> None:
    assert compose["services"]["gateway"]["ports"] == [
        "${GATEWAY_BIND:-127.0.0.1}:${GATEWAY_PORT:-8080}:8080"
    ]
    for name, service in compose["services"].items():
        for port in service.get("ports", []):
            public = not str(port).startswith(("127.0.0.1:", "${GATEWAY_BIND:-127.0.0.1}"))
            assert not public or name == "caddy", (name, port)
    caddy = compose["services"]["caddy"]
    assert caddy["profiles"] == ["tls"]
    assert "./deploy/Caddyfile:/etc/caddy/Caddyfile:ro" in caddy["volumes"]
    caddyfile = (DEPLOY / "Caddyfile").read_text()
    assert "reverse_proxy gateway:8080" in caddyfile
    assert "{$WEBHOOK_ROOT}/*" in caddyfile and "{$CLIENT_ROOT}/*" in caddyfile


def _seconds(value: str) -> float:
    match = re.fullmatch(r"(\d+)s", value)
    assert match is not None, value
    return float(match[1])


def test_stop_grace_is_longer_than_the_drain(compose: dict[str, Any]) -> None:
    defaults = {n: f.default for n, f in Settings.model_fields.items()}
    gateway = _seconds(compose["services"]["gateway"]["stop_grace_period"])
    worker = _seconds(compose["services"]["worker"]["stop_grace_period"])
    # In-flight requests finish within REQUEST_BUDGET; a worker's batch may be held RETRY_HOLD and
    # its reports on the wire get PORTAL_TIMEOUT + 1 s.
    assert gateway > defaults["request_budget"] + 10
    assert worker > defaults["retry_hold"] + defaults["portal_timeout"] + 1


def test_alerts_reach_alertmanager(compose: dict[str, Any]) -> None:
    manager = compose["services"]["alertmanager"]
    assert manager["profiles"] == ["alerts"]
    assert "./deploy/alertmanager.yml:/etc/alertmanager/alertmanager.yml:ro" in manager["volumes"]
    prometheus = load(DEPLOY / "prometheus.yml")
    [target] = prometheus["alerting"]["alertmanagers"]
    assert target["dns_sd_configs"][0]["names"] == ["alertmanager"]
    assert target["dns_sd_configs"][0]["port"] == 9093
    config = load(DEPLOY / "alertmanager.yml")
    receivers = {r["name"] for r in config["receivers"]}
    routed = {config["route"]["receiver"]} | {r["receiver"] for r in config["route"]["routes"]}
    assert routed <= receivers
    severities = {
        rule["labels"]["severity"]
        for group in load(DEPLOY / "alerts.yml")["groups"]
        for rule in group["rules"]
    }
    matched = {m for r in config["route"]["routes"] for m in r["matchers"]}
    assert {f'severity="{s}"' for s in severities} <= matched


def test_compose_mounts_files_that_exist_and_scrapes_the_workers_port() -> None:
    compose = (ROOT / "compose.yaml").read_text()
    mounts = re.findall(r"- (\./deploy/[^:]+):", compose)
    assert len(mounts) >= 6
    for mount in mounts:
        assert (ROOT / mount).exists(), mount
    worker_port = re.search(r'SHAREVAULT_WORKER_METRICS_PORT: "(\d+)"', compose)
    assert worker_port is not None
    scrape = (DEPLOY / "prometheus.yml").read_text()
    job = scrape.split("job_name: sharevault-worker", 1)[1].split("job_name:", 1)[0]
    assert re.search(rf"port: {worker_port[1]}\b", job)


def run_entrypoint(
    tmp_path: Path, env: dict[str, str], *args: str
) -> subprocess.CompletedProcess[str]:
    """deploy/entrypoint.sh with a stand-in `sharevault` that prints what it was given."""
    fake = tmp_path / "bin" / "sharevault"
    fake.parent.mkdir(exist_ok=True)
    fake.write_text('#!/bin/sh\necho "args: $*"\nenv | grep "^SHAREVAULT_" | sort\n')
    fake.chmod(0o755)
    return subprocess.run(
        ["sh", str(DEPLOY / "entrypoint.sh"), *args],
        env={"PATH": f"{fake.parent}:/usr/bin:/bin", **env},
        capture_output=True,
        text=True,
        timeout=10,
        check=False,
    )


def test_entrypoint_reads_secrets_from_files(tmp_path: Path) -> None:
    (tmp_path / "secret").write_text("s3cret with spaces\n")
    (tmp_path / "empty").write_text("")
    env = {
        "SHAREVAULT_WEBHOOK_SECRET_FILE": str(tmp_path / "secret"),
        "SHAREVAULT_PORTAL_API_KEY_FILE": str(tmp_path / "empty"),
        # Not made yet: `keys generate` must still run.
        "SHAREVAULT_ENCRYPTION_KEYS_FILE": str(tmp_path / "absent"),
    }
    done = run_entrypoint(tmp_path, env, "keys", "generate")
    assert done.returncode == 0, done.stderr
    lines = done.stdout.splitlines()
    assert lines[0] == "args: keys generate"
    assert "SHAREVAULT_WEBHOOK_SECRET=s3cret with spaces" in lines
    assert "SHAREVAULT_PORTAL_API_KEY=" in lines  # empty: the settings treat it as unset
    assert not any(line.startswith("SHAREVAULT_ENCRYPTION_KEYS") for line in lines)
    assert not any("_FILE=" in line for line in lines)


def test_entrypoint_refuses_a_secret_given_twice(tmp_path: Path) -> None:
    (tmp_path / "secret").write_text("from-file")
    env = {
        "SHAREVAULT_WEBHOOK_SECRET_FILE": str(tmp_path / "secret"),
        "SHAREVAULT_WEBHOOK_SECRET": "x",
    }
    done = run_entrypoint(tmp_path, env, "serve")
    assert done.returncode == 2
    assert "both SHAREVAULT_WEBHOOK_SECRET and SHAREVAULT_WEBHOOK_SECRET_FILE" in done.stderr
    assert "from-file" not in done.stderr + done.stdout


def test_the_image_uses_the_entrypoint_the_lock_and_a_pinned_base() -> None:
    dockerfile = (ROOT / "Dockerfile").read_text()
    assert re.search(r"python:3\.11-slim@sha256:[0-9a-f]{64}\b", dockerfile)
    assert "--require-hashes" in dockerfile and "requirements.lock" in dockerfile
    assert 'ENTRYPOINT ["sharevault-entrypoint"]' in dockerfile
    assert "COPY deploy/entrypoint.sh /usr/local/bin/sharevault-entrypoint" in dockerfile
    ignored = (ROOT / ".dockerignore").read_text().split()
    assert {"secrets", ".env"} <= set(ignored)
