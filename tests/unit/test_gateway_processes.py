"""`sharevault serve` runs one gateway process per core by default (HTTP_PROCESSES=0)."""

from __future__ import annotations

import base64
import os

from pydantic import SecretStr

from sharevault.cli import gateway_processes
from sharevault.config import Settings

KEYS = "k1:" + base64.b64encode(bytes(range(32))).decode()


def settings(**values: object) -> Settings:
    return Settings(
        webhook_secret=SecretStr("a-very-long-webhook-secret-value"),
        encryption_keys=SecretStr(KEYS),
        **values,  # type: ignore[arg-type]
    )


def test_by_default_one_process_per_core_it_may_run_on() -> None:
    assert settings().http_processes == 0
    assert gateway_processes(settings()) == len(os.sched_getaffinity(0))


def test_a_set_count_is_kept_and_a_port_the_os_picks_gets_one() -> None:
    assert gateway_processes(settings(http_processes=3)) == 3
    assert gateway_processes(settings(http_port=0)) == 1
