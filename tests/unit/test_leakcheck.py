from __future__ import annotations

import logging

from tests.support import leakcheck


def test_the_leak_check_finds_a_logged_secret() -> None:
    value = "planted-secret-for-the-leak-check"
    leakcheck.sensitive(value)
    try:
        logging.getLogger("sharevault.test").info("oops %s", value)
        with leakcheck.subprocess_log("planted") as out:
            out.write(b"nothing to see")
        found = leakcheck.leaks()
        assert len(found) == 1 and found[0].startswith("test process:")
        with leakcheck.subprocess_log("planted") as out:
            out.write(f"child said {value}".encode())
        assert len(leakcheck.leaks()) == 2
    finally:
        # Take the plant back so the session's own check judges only real code.
        leakcheck._SENSITIVE.discard(value)
        leakcheck._RECORDS[:] = [r for r in leakcheck._RECORDS if value not in r]
        for path in leakcheck._LOG_DIR.glob("planted-*.log"):
            path.unlink()
    assert leakcheck.leaks() == []
