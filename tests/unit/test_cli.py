"""The `sharevault` command without services: version, one-line usage errors, the keys group."""

from __future__ import annotations

import base64
import importlib.metadata
import os
import subprocess
import sys

import pytest

from sharevault.config import parse_keyring


def run_cli(*args: str, env: dict[str, str] | None = None) -> subprocess.CompletedProcess[str]:
    base = {k: v for k, v in os.environ.items() if not k.startswith("SHAREVAULT_")}
    return subprocess.run(
        [sys.executable, "-m", "sharevault", *args],
        env={**base, **(env or {})},
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )


def test_version() -> None:
    result = run_cli("--version")
    assert result.returncode == 0
    assert result.stdout.split()[-1] == importlib.metadata.version("sharevault")


@pytest.mark.parametrize(
    ("args", "names"),
    [
        (("--log-level", "loud", "stats"), "--log-level"),
        (("--log-format", "xml", "stats"), "--log-format"),
        (("dlq", "list", "--since", "yesterday"), "--since"),
        (("keys", "rotate", "--batch-size", "0"), "--batch-size"),
        (("keys", "generate", "--key-id", "a,b"), "--key-id"),
        (("no-such-command",), "no-such-command"),
    ],
)
def test_a_bad_option_value_is_one_line_and_exit_2(args: tuple[str, ...], names: str) -> None:
    result = run_cli(*args)
    assert result.returncode == 2
    [line] = result.stderr.strip().splitlines()
    assert names in line and "Traceback" not in result.stderr
    assert result.stdout == ""


@pytest.mark.parametrize("key_id", ["a,b", "a:b", "a b", " a", "é", "x" * 65])
def test_keys_generate_refuses_an_id_the_keyring_parser_would_not_take(key_id: str) -> None:
    result = run_cli("keys", "generate", "--key-id", key_id)
    assert result.returncode == 2
    assert "a key id is 1-64 printable ASCII characters" in result.stderr
    assert result.stdout == ""


def test_keys_generate_with_an_id_makes_a_keyring_the_parser_takes() -> None:
    result = run_cli("keys", "generate", "--key-id", "k-2026.12")
    assert result.returncode == 0
    [(key_id, key)] = parse_keyring(result.stdout.strip())
    assert key_id == "k-2026.12" and len(key) == 32


def test_keys_group_holds_generate_status_rotate_and_the_old_name_is_hidden() -> None:
    listed = run_cli("keys", "--help").stdout
    for command in ("generate", "status", "rotate"):
        assert f"  {command} " in listed
    top = run_cli("--help").stdout
    assert "rotate-key" not in top and "keys" in top
    alias = run_cli("rotate-key", "--help")
    assert alias.returncode == 0 and "--dry-run" in alias.stdout


def test_commands_ask_only_for_the_secrets_they_use() -> None:
    # No secret at all: the key tools that need a keyring name it, and only it.
    for args in (("work",), ("keys", "status"), ("keys", "rotate"), ("replay", "--since", "1h")):
        result = run_cli(*args)
        assert result.returncode == 2, args
        assert result.stderr.strip() == (
            "configuration error: SHAREVAULT_ENCRYPTION_KEYS is required"
        ), args
    register = run_cli("register-webhook", "--url", "https://custody.example.com/webhook")
    assert register.returncode == 2
    assert register.stderr.strip() == (
        "configuration error: SHAREVAULT_WEBHOOK_SECRET is required; "
        "SHAREVAULT_PORTAL_API_KEY is required"
    )


GOOD_KEYS = "k1:" + base64.b64encode(bytes(range(32))).decode()


def test_keys_generate_prints_only_the_value() -> None:
    result = run_cli("keys", "generate")
    assert result.returncode == 0
    [line] = result.stdout.splitlines()
    assert len(parse_keyring(line)) == 1


def test_serve_without_settings_stops_with_one_clear_line() -> None:
    result = run_cli("serve", env={"SHAREVAULT_ENCRYPTION_KEYS": GOOD_KEYS})
    assert result.returncode == 2
    assert result.stderr.strip().splitlines() == [
        "configuration error: SHAREVAULT_WEBHOOK_SECRET is required"
    ]
    assert GOOD_KEYS.split(":")[1] not in result.stderr
