"""scripts/lock --check: offline, and it fails when pyproject's dependencies moved past the lock."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]
LOCK = ROOT / "requirements.lock"


def check(
    pyproject: Path = ROOT / "pyproject.toml", lock: Path = LOCK
) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [
            sys.executable,
            str(ROOT / "scripts/lock"),
            "--check",
            "--pyproject",
            str(pyproject),
            "--lock",
            str(lock),
        ],
        capture_output=True,
        text=True,
        timeout=30,
        check=False,
    )


def test_the_lock_is_current() -> None:
    done = check()
    assert done.returncode == 0, done.stderr


def test_a_changed_dependency_makes_it_stale(tmp_path: Path) -> None:
    pyproject = tmp_path / "pyproject.toml"
    text = (ROOT / "pyproject.toml").read_text()
    assert '"msgpack>=1.0",' in text
    pyproject.write_text(text.replace('"msgpack>=1.0",', '"msgpack>=1.0",\n    "attrs>=23",'))
    done = check(pyproject)
    assert done.returncode == 1
    assert "not made from pyproject.toml's current dependencies" in done.stderr


def test_a_lock_without_hashes_or_a_pin_is_refused(tmp_path: Path) -> None:
    lock = tmp_path / "requirements.lock"
    lines = LOCK.read_text().splitlines()
    unhashed = [line.rstrip(" \\") for line in lines if "--hash=" not in line]
    lock.write_text("\n".join(unhashed) + "\n")
    assert "has no hashes" in check(lock=lock).stderr
    lock.write_text("\n".join(line for line in lines if not line.startswith("msgpack==")) + "\n")
    assert "pins no version of: msgpack" in check(lock=lock).stderr


def test_the_image_installs_the_lock_with_hashes() -> None:
    dockerfile = (ROOT / "Dockerfile").read_text()
    assert "COPY requirements.lock" in dockerfile
    assert "pip install --require-hashes --only-binary=:all: -r requirements.lock" in dockerfile
    assert "pip install --no-deps --no-build-isolation ." in dockerfile
