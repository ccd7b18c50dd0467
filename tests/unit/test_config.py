from __future__ import annotations

import base64
import os
from pathlib import Path

import pytest
from pydantic import SecretStr

from sharevault.config import ConfigError, load_settings, mask_url, parse_keyring

GOOD_KEYS = "k1:" + base64.b64encode(bytes(range(32))).decode()
SECRET = "a-very-long-webhook-secret-value"


@pytest.fixture(autouse=True)
def clean_env(monkeypatch: pytest.MonkeyPatch) -> None:
    for name in list(os.environ):
        if name.startswith("SHAREVAULT_"):
            monkeypatch.delenv(name)


def test_defaults_work_on_a_developer_machine(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("SHAREVAULT_WEBHOOK_SECRET", SECRET)
    monkeypatch.setenv("SHAREVAULT_ENCRYPTION_KEYS", GOOD_KEYS)
    settings = load_settings()
    assert settings.http_port == 8080
    assert settings.webhook_root == "/webhook"
    assert settings.webhook_secrets == [SECRET.encode()]
    assert settings.keyring == parse_keyring(GOOD_KEYS)


def test_secrets_are_demanded_only_where_used_and_then_named() -> None:
    settings = load_settings()  # migrate, stats, dlq: no secret needed
    assert settings.webhook_secret is None and settings.encryption_keys is None
    with pytest.raises(ConfigError) as err:
        settings.require("webhook_secret", "encryption_keys")
    message = str(err.value)
    assert "SHAREVAULT_WEBHOOK_SECRET is required" in message
    assert "SHAREVAULT_ENCRYPTION_KEYS is required" in message
    assert "\n" not in message
    with pytest.raises(ConfigError, match="SHAREVAULT_ENCRYPTION_KEYS is required"):
        _ = settings.keyring
    with pytest.raises(ConfigError, match="SHAREVAULT_WEBHOOK_SECRET is required"):
        _ = settings.webhook_secrets


def test_secrets_are_read_from_a_secrets_directory(
    monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    (tmp_path / "sharevault_webhook_secret").write_text(SECRET)
    (tmp_path / "sharevault_encryption_keys").write_text(GOOD_KEYS)
    monkeypatch.setenv("SHAREVAULT_SECRETS_DIR", str(tmp_path))
    settings = load_settings()
    assert settings.webhook_secrets == [SECRET.encode()]
    assert settings.keyring == parse_keyring(GOOD_KEYS)
    monkeypatch.setenv("SHAREVAULT_WEBHOOK_SECRET", "the-environment-wins-over-a-file")
    assert load_settings().webhook_secrets == [b"the-environment-wins-over-a-file"]
    monkeypatch.setenv("SHAREVAULT_SECRETS_DIR", str(tmp_path / "missing"))
    with pytest.raises(ConfigError, match="SHAREVAULT_SECRETS_DIR"):
        load_settings()


def test_malformed_values_are_named_but_never_echoed(monkeypatch: pytest.MonkeyPatch) -> None:
    bad_keys = "k1:" + base64.b64encode(b"sixteen-byte-key").decode()
    monkeypatch.setenv("SHAREVAULT_WEBHOOK_SECRET", "short-secret")
    monkeypatch.setenv("SHAREVAULT_ENCRYPTION_KEYS", bad_keys)
    monkeypatch.setenv("SHAREVAULT_HTTP_PORT", "not-a-port")
    with pytest.raises(ConfigError) as err:
        load_settings()
    message = str(err.value)
    for name in ("WEBHOOK_SECRET", "ENCRYPTION_KEYS", "HTTP_PORT"):
        assert f"SHAREVAULT_{name}" in message
    assert "short-secret" not in message
    assert bad_keys.split(":")[1] not in message


def test_waits_that_exceed_the_budget_stop_the_start_in_one_line(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.setenv("SHAREVAULT_WEBHOOK_SECRET", SECRET)
    monkeypatch.setenv("SHAREVAULT_ENCRYPTION_KEYS", GOOD_KEYS)
    defaults = load_settings()
    assert (defaults.request_budget, defaults.max_body_bytes) == (9.0, 64 * 1024)
    assert defaults.db_timeout + defaults.publish_timeout + defaults.commit_wait <= 9.0
    with pytest.raises(ConfigError) as err:
        load_settings(commit_wait=7.0)  # 1 + 2 + 7 > 9
    message = str(err.value)
    for name in ("DB_TIMEOUT", "PUBLISH_TIMEOUT", "COMMIT_WAIT", "SHAREVAULT_REQUEST_BUDGET"):
        assert name in message
    assert "\n" not in message and "Value error" not in message
    with pytest.raises(ConfigError, match="PORTAL_TIMEOUT"):
        load_settings(request_budget=4.0, commit_wait=0.5, publish_timeout=1.0)  # 3 + 1 + 1 > 4
    assert load_settings(request_budget=20.0, commit_wait=8.0).commit_wait == 8.0


def test_mask_url_hides_the_password() -> None:
    masked = mask_url(SecretStr("postgresql://user:hunter2@db:5432/sv"))
    assert masked == "postgresql://user:***@db:5432/sv"
    assert mask_url(SecretStr("postgresql://u@db/sv")) == "postgresql://u@db/sv"


def test_mask_url_hides_the_password_of_a_multi_host_dsn() -> None:
    dsn = "postgresql://sv:s3cret@h1:5432,h2:5433/db?target_session_attrs=read-write"
    masked = mask_url(SecretStr(dsn))
    assert masked == "postgresql://sv:***@h1:5432,h2:5433/db?target_session_attrs=read-write"
