"""Session-wide leak check: every log record of the test process and every subprocess's output is
kept, and at the end scanned for the secrets, keys, tokens and shares the tests used."""

from __future__ import annotations

import logging
import tempfile
from pathlib import Path
from typing import IO

import pytest

_SENSITIVE: set[str] = set()
_RECORDS: list[str] = []
_LOG_DIR = Path(tempfile.mkdtemp(prefix="sharevault-test-logs-"))


def sensitive(*values: str) -> None:
    """Values that must never show up in any log line (secrets, keys, tokens, shares)."""
    _SENSITIVE.update(v for v in values if len(v) >= 8)


def subprocess_log(name: str) -> IO[bytes]:
    """A file for a subprocess's stdout/stderr; it is scanned at the end of the session."""
    return open(_LOG_DIR / f"{name}-{len(list(_LOG_DIR.iterdir()))}.log", "wb")


class _Keeper(logging.Handler):
    def emit(self, record: logging.LogRecord) -> None:
        try:
            text = record.getMessage()
        except Exception:
            text = f"{record.msg!r} {record.args!r}"
        _RECORDS.append(f"{record.name}: {text} {record.exc_text or ''}")


def pytest_configure(config: pytest.Config) -> None:
    handler = _Keeper(level=logging.DEBUG)
    handler.setFormatter(logging.Formatter())
    root = logging.getLogger()
    root.addHandler(handler)
    root.setLevel(logging.DEBUG)
    # Very chatty and CPU-heavy at DEBUG; their INFO and above is still kept and scanned.
    for name in ("aio_pika", "aiormq", "asyncio", "hpack", "urllib3"):
        logging.getLogger(name).setLevel(logging.INFO)


def leaks() -> list[str]:
    """Where each sensitive value appeared."""
    found = []
    sources = [("test process", "\n".join(_RECORDS))]
    sources += [(p.name, p.read_text(errors="replace")) for p in sorted(_LOG_DIR.glob("*.log"))]
    for where, text in sources:
        for value in _SENSITIVE:
            if value in text:
                found.append(f"{where}: a sensitive value of {len(value)} chars ({value[:4]}…)")
    return found


def pytest_sessionfinish(session: pytest.Session, exitstatus: int) -> None:
    found = leaks()
    reporter = session.config.pluginmanager.get_plugin("terminalreporter")
    if reporter is not None:
        reporter.write("\n")
    if found:
        if reporter is not None:
            reporter.write_line("LEAK CHECK FAILED: sensitive values found in logs:", red=True)
            for line in found:
                reporter.write_line(f"  {line}", red=True)
        session.exitstatus = pytest.ExitCode.TESTS_FAILED
    elif reporter is not None:
        reporter.write_line(
            f"leak check: {len(_SENSITIVE)} sensitive values, {len(_RECORDS)} log records and "
            f"{len(list(_LOG_DIR.glob('*.log')))} process logs scanned, none found"
        )
