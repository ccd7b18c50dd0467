"""A private PostgreSQL cluster for fault tests and drills: own directory and port, stopped at will;
with streaming replicas (pg_basebackup), synchronous or not, promoted at will.

Never the machine's shared server. initdb and postgres refuse to run as root, so as root the
cluster runs as the `postgres` OS user (the directory belongs to it)."""

from __future__ import annotations

import os
import pwd
import shlex
import shutil
import signal
import socket
import subprocess
import tempfile
import time
from pathlib import Path

from tests.support.environment import free_port

BIN = Path(os.environ.get("SHAREVAULT_TEST_PG_BIN", "/usr/lib/postgresql/15/bin"))


class PgCluster:
    """initdb once; start, stop (fast or immediate), kill and start again as often as a test
    likes. `replica()` clones it into a standby streaming from it; `promote()` makes one primary."""

    def __init__(self, root: Path | None = None, name: str = "data") -> None:
        self.owned = root is None  # the primary owns the directory its replicas live in
        self.root = root or Path(tempfile.mkdtemp(prefix="sv-pgcluster-"))
        self.name = name
        self.data = self.root / name
        self.port = free_port()
        self.running = False
        self.replicas: list[PgCluster] = []
        self._as_postgres = os.geteuid() == 0
        if self._as_postgres and self.owned:
            pg = pwd.getpwnam("postgres")
            os.chown(self.root, pg.pw_uid, pg.pw_gid)

    def _run(self, *argv: str | Path) -> str:
        command = [str(a) for a in argv]
        if self._as_postgres:
            command = ["su", "postgres", "-s", "/bin/sh", "-c", shlex.join(command)]
        done = subprocess.run(command, check=True, capture_output=True, timeout=120, text=True)
        return done.stdout

    def init(self) -> PgCluster:
        self._run(BIN / "initdb", "-D", self.data, "-A", "trust", "-U", "postgres", "-N")
        return self

    @property
    def node(self) -> str:
        """host:port, as /readyz names a database node."""
        return f"127.0.0.1:{self.port}"

    def start(self) -> None:
        # wal_level=replica and wal senders are PostgreSQL 15's defaults: a replica can clone it.
        options = f"-p {self.port} -k {self.root} -c listen_addresses=127.0.0.1"
        log = self.root / f"{self.name}.log"
        self._run(BIN / "pg_ctl", "-D", self.data, "-o", options, "-l", log, "-w", "start")
        self.running = True

    def stop(self, mode: str = "fast") -> None:
        """`fast`: clean shutdown, sessions cut; `immediate`: like a crash (recovery on start)."""
        self._run(BIN / "pg_ctl", "-D", self.data, "-m", mode, "-w", "stop")
        self.running = False

    def kill(self) -> None:
        """SIGKILL the postmaster, as a machine lost: its backends end when they notice."""
        pid = int((self.data / "postmaster.pid").read_text().split("\n", 1)[0])
        os.kill(pid, signal.SIGKILL)
        self.running = False
        deadline = time.monotonic() + 10
        while time.monotonic() < deadline and _listening(self.port):
            time.sleep(0.05)

    def sql(self, statement: str) -> str:
        """Run one statement with psql over the cluster's socket; its output, unaligned."""
        return self._run(
            BIN / "psql", "-h", self.root, "-p", str(self.port), "-U", "postgres", "-d",
            "postgres", "-Atc", statement,
        ).strip()  # fmt: skip

    def replica(self, *, synchronous: bool = False) -> PgCluster:
        """A streaming standby cloned with pg_basebackup -R and started; `synchronous`: the
        primary waits for it at every commit (synchronous_standby_names)."""
        standby = PgCluster(self.root, f"replica{len(self.replicas) + 1}")
        conninfo = f"host=127.0.0.1 port={self.port} user=postgres application_name={standby.name}"
        self._run(
            BIN / "pg_basebackup",
            "-D",
            standby.data,
            "-R",
            "-X",
            "stream",
            "-c",
            "fast",
            "-d",
            conninfo,
        )
        standby.start()
        self.replicas.append(standby)
        if synchronous:
            names = ",".join(r.name for r in self.replicas)
            self.sql(f"ALTER SYSTEM SET synchronous_standby_names = '{names}'")
            self.sql("SELECT pg_reload_conf()")
        self.wait_streaming(standby, "sync" if synchronous else "async")
        return standby

    def wait_streaming(self, standby: PgCluster, state: str, timeout: float = 30) -> None:
        """Until the primary sees the standby streaming in `state` ("sync" or "async")."""
        deadline = time.monotonic() + timeout
        # The name is ours (replicaN), not input.
        where = f"application_name = '{standby.name}'"
        query = f"SELECT sync_state FROM pg_stat_replication WHERE {where}"  # noqa: S608
        while time.monotonic() < deadline:
            if self.sql(query) == state:
                return
            time.sleep(0.2)
        raise RuntimeError(f"{standby.name} is not streaming ({state}) from the primary")

    def promote(self) -> None:
        """The standby becomes a primary (read-write) at once."""
        self._run(BIN / "pg_ctl", "-D", self.data, "-w", "promote")

    def in_recovery(self) -> bool:
        return self.sql("SELECT pg_is_in_recovery()") == "t"

    def dsn(self, database: str = "postgres") -> str:
        return f"postgresql://postgres@127.0.0.1:{self.port}/{database}"

    def destroy(self) -> None:
        for standby in self.replicas:
            standby.destroy()
        if self.running:
            self.stop("immediate")
        if self.owned:
            shutil.rmtree(self.root, ignore_errors=True)


def multi_host_dsn(nodes: list[PgCluster], database: str = "postgres") -> str:
    """One libpq DSN naming every node, for the read-write one (the primary) wherever it is."""
    hosts = ",".join(node.node for node in nodes)
    return f"postgresql://postgres@{hosts}/{database}?target_session_attrs=read-write"


def _listening(port: int) -> bool:
    with socket.socket() as sock:
        return sock.connect_ex(("127.0.0.1", port)) == 0
