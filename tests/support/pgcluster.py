"""A private PostgreSQL cluster for fault tests and drills: own directory and port, stopped at will.

Never the machine's shared server. initdb and postgres refuse to run as root, so as root the
cluster runs as the `postgres` OS user (the directory belongs to it)."""

from __future__ import annotations

import os
import pwd
import shlex
import shutil
import subprocess
import tempfile
from pathlib import Path

from tests.support.environment import free_port

BIN = Path(os.environ.get("SHAREVAULT_TEST_PG_BIN", "/usr/lib/postgresql/15/bin"))


class PgCluster:
    """initdb once; start, stop (fast or immediate) and start again as often as a test likes."""

    def __init__(self) -> None:
        self.root = Path(tempfile.mkdtemp(prefix="sv-pgcluster-"))
        self.data = self.root / "data"
        self.port = free_port()
        self.running = False
        self._as_postgres = os.geteuid() == 0
        if self._as_postgres:
            pg = pwd.getpwnam("postgres")
            os.chown(self.root, pg.pw_uid, pg.pw_gid)

    def _run(self, *argv: str | Path) -> None:
        command = [str(a) for a in argv]
        if self._as_postgres:
            command = ["su", "postgres", "-s", "/bin/sh", "-c", shlex.join(command)]
        subprocess.run(command, check=True, capture_output=True, timeout=60)

    def init(self) -> PgCluster:
        self._run(BIN / "initdb", "-D", self.data, "-A", "trust", "-U", "postgres", "-N")
        return self

    def start(self) -> None:
        options = f"-p {self.port} -k {self.root} -c listen_addresses=127.0.0.1"
        log = self.root / "server.log"
        self._run(BIN / "pg_ctl", "-D", self.data, "-o", options, "-l", log, "-w", "start")
        self.running = True

    def stop(self, mode: str = "fast") -> None:
        """`fast`: clean shutdown, sessions cut; `immediate`: like a crash (recovery on start)."""
        self._run(BIN / "pg_ctl", "-D", self.data, "-m", mode, "-w", "stop")
        self.running = False

    def dsn(self, database: str = "postgres") -> str:
        return f"postgresql://postgres@127.0.0.1:{self.port}/{database}"

    def destroy(self) -> None:
        if self.running:
            self.stop("immediate")
        shutil.rmtree(self.root, ignore_errors=True)
