"""Set-up and tear-down: wrk and Python tools, a keyring, own databases and queue prefix."""

from __future__ import annotations

import importlib.metadata
import os
import re
import secrets
import shutil
import subprocess
import sys
import tomllib
from dataclasses import dataclass, field
from pathlib import Path

import aio_pika
import asyncpg

from sharevault.broker import Topology, delete_topology

REPO = Path(__file__).resolve().parent.parent
PG_ADMIN = os.environ.get("BENCH_PG", "postgresql://postgres@127.0.0.1:5432/postgres")
AMQP_URL = os.environ.get("BENCH_AMQP", "amqp://guest:guest@127.0.0.1:5672/")


def setting_overrides() -> dict[str, str]:
    """BENCH_SV_<NAME>=value runs sharevault with SHAREVAULT_<NAME>=value (A/B runs of a setting;
    the bench otherwise runs sharevault with its default settings)."""
    return {
        "SHAREVAULT_" + k.removeprefix("BENCH_SV_"): v
        for k, v in os.environ.items()
        if k.startswith("BENCH_SV_")
    }


def variant_overrides() -> dict[str, str]:
    """BENCH_AB_<NAME>=value: the curve adds "sharevault B", run with SHAREVAULT_<NAME>=value (on
    its own database and queues), interleaved with the default one: an A/B in one run."""
    return {
        "SHAREVAULT_" + k.removeprefix("BENCH_AB_"): v
        for k, v in os.environ.items()
        if k.startswith("BENCH_AB_") and k != "BENCH_AB_TREE"
    } | ({"tree": os.environ["BENCH_AB_TREE"]} if os.environ.get("BENCH_AB_TREE") else {})


def log(message: str) -> None:
    print(f"[bench] {message}", file=sys.stderr, flush=True)


def ensure_wrk() -> bool:
    """wrk from Debian's packages, installed when missing (needs root); True when available."""
    if shutil.which("wrk"):
        return True
    if os.geteuid() != 0 or not shutil.which("apt-get"):
        log("wrk is missing and cannot be installed here (needs root and apt-get)")
        return False
    log("installing wrk with apt-get")
    if _apt("install", "-y", "-q", "wrk") != 0:
        _apt("update", "-q")
        _apt("install", "-y", "-q", "wrk")
    return shutil.which("wrk") is not None


def _apt(*args: str) -> int:
    env = {**os.environ, "DEBIAN_FRONTEND": "noninteractive"}
    return subprocess.run(
        ["apt-get", *args], env=env, check=False, stdout=subprocess.DEVNULL
    ).returncode


def ensure_python_deps() -> None:
    """Install the `bench` extra of pyproject.toml into this interpreter when a part is missing."""
    extras = tomllib.loads((REPO / "pyproject.toml").read_text())["project"][
        "optional-dependencies"
    ]["bench"]
    missing = []
    for requirement in extras:
        name = re.split(r"[<>=!~\[; ]", requirement, maxsplit=1)[0]
        try:
            importlib.metadata.version(name)
        except importlib.metadata.PackageNotFoundError:
            missing.append(requirement)
    if missing:
        log(f"installing {', '.join(missing)}")
        subprocess.run([sys.executable, "-m", "pip", "install", "-q", *missing], check=True)


def generate_keyring() -> str:
    """A fresh keyring from the real CLI, as an operator would make one."""
    out = subprocess.run(
        [sys.executable, "-m", "sharevault", "keys", "generate"],
        check=True,
        capture_output=True,
        text=True,
        cwd=REPO,
    )
    return out.stdout.strip()


def dsn_for(name: str) -> str:
    return PG_ADMIN.rsplit("/", 1)[0] + "/" + name


@dataclass
class BenchEnv:
    """Names and secrets of one run; everything it creates is removed by `teardown`."""

    run_id: str = field(default_factory=lambda: str(os.getpid()))
    secret: str = field(default_factory=lambda: secrets.token_urlsafe(24))
    keys: str = ""
    data_directory: str = ""

    @property
    def prefix(self) -> str:
        return f"svbench.{self.run_id}"

    def prefix_of(self, role: str) -> str:
        """Queue prefix of a sharevault role: "svb" (the A/B variant) has its own."""
        return self.prefix + ("b" if role == "svb" else "")

    def database(self, role: str) -> str:
        return f"sharevault_bench_{self.run_id}_{role}"

    def dsn(self, role: str) -> str:
        return dsn_for(self.database(role))

    @property
    def raw_queue(self) -> str:
        return f"{self.prefix}.raw"

    def sharevault_env(self, role: str, **extra: str) -> dict[str, str]:
        """The environment of `python -m sharevault …` for one database."""
        base = {k: v for k, v in os.environ.items() if not k.startswith("SHAREVAULT_")}
        variant = variant_overrides() if role == "svb" else {}
        variant = {k: v for k, v in variant.items() if k.startswith("SHAREVAULT_")}
        values = {
            "SHAREVAULT_DATABASE_URL": self.dsn(role),
            "SHAREVAULT_AMQP_URL": AMQP_URL,
            "SHAREVAULT_AMQP_PREFIX": self.prefix_of(role),
            "SHAREVAULT_WEBHOOK_SECRET": self.secret,
            "SHAREVAULT_ENCRYPTION_KEYS": self.keys,
            "SHAREVAULT_PORTAL_API_URL": "http://127.0.0.1:9",
        }
        values.update({f"SHAREVAULT_{k.upper()}": v for k, v in extra.items()})
        return {**base, **values, **setting_overrides(), **variant}

    def baseline_env(self, role: str) -> dict[str, str]:
        return {
            **os.environ,
            "BENCH_SECRET": self.secret,
            "BENCH_KEYS": self.keys,
            "BENCH_DSN": self.dsn(role),
            "BENCH_AMQP": AMQP_URL,
        }

    def migrate(self, role: str) -> None:
        """Create and migrate one database with the real `sharevault migrate`."""
        subprocess.run(
            [sys.executable, "-m", "sharevault", "--log-level", "WARNING", "migrate"],
            env=self.sharevault_env(role),
            check=True,
            cwd=REPO,
            stderr=subprocess.DEVNULL,
        )

    async def setup(self, roles: list[str]) -> None:
        self.keys = generate_keyring()
        for role in roles:
            self.migrate(role)
        admin = await asyncpg.connect(PG_ADMIN)
        try:
            self.data_directory = str(await admin.fetchval("SHOW data_directory"))
        finally:
            await admin.close()

    async def teardown(self, roles: list[str]) -> None:
        admin = await asyncpg.connect(PG_ADMIN)
        try:
            for role in roles:
                await admin.execute(f'DROP DATABASE IF EXISTS "{self.database(role)}" WITH (FORCE)')
        finally:
            await admin.close()
        await delete_topology(AMQP_URL, Topology(self.prefix))
        if "svb" in roles:
            await delete_topology(AMQP_URL, Topology(self.prefix_of("svb")))
        connection = await aio_pika.connect(AMQP_URL)
        try:
            channel = await connection.channel()
            await channel.queue_delete(self.raw_queue)
        finally:
            await connection.close()
