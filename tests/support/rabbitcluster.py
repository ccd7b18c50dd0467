"""A private RabbitMQ cluster for cluster tests and drills: three nodes as separate Erlang nodes
(own node names, AMQP and distribution ports, data and log directories; the machine's cookie and
epmd), clustered with join_cluster, each killed, stopped or started at will, all torn down after.

Never the machine's own node (rabbit@localhost, 5672). As root, Debian's rabbitmq-server and
rabbitmqctl switch to the `rabbitmq` user, so the directories belong to it."""

from __future__ import annotations

import os
import pwd
import shutil
import signal
import subprocess
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path

from tests.support.environment import free_port

SERVER = os.environ.get("SHAREVAULT_TEST_RABBITMQ_SERVER", "rabbitmq-server")
CTL = os.environ.get("SHAREVAULT_TEST_RABBITMQCTL", "rabbitmqctl")
START_TIMEOUT = 90
# A minority partition stops serving rather than diverging (RabbitMQ's advice for 3+ nodes).
CONFIG = "cluster_partition_handling = pause_minority\n"


@dataclass
class RabbitNode:
    name: str  # the Erlang node name, e.g. sv123a@localhost
    port: int
    dist_port: int
    base: Path
    running: bool = False

    @property
    def node(self) -> str:
        """host:port, as /readyz names a broker node."""
        return f"127.0.0.1:{self.port}"

    def url(self, vhost: str = "") -> str:
        return f"amqp://guest:guest@127.0.0.1:{self.port}/{vhost}"

    def env(self) -> dict[str, str]:
        return {
            **os.environ,
            "RABBITMQ_NODENAME": self.name,
            "RABBITMQ_NODE_PORT": str(self.port),
            "RABBITMQ_DIST_PORT": str(self.dist_port),
            "RABBITMQ_MNESIA_BASE": str(self.base / "mnesia"),
            "RABBITMQ_LOG_BASE": str(self.base / "log"),
            "RABBITMQ_PID_FILE": str(self.base / "node.pid"),
            "RABBITMQ_ENABLED_PLUGINS_FILE": str(self.base / "enabled_plugins"),
            "RABBITMQ_CONFIG_FILE": str(self.base / "node.conf"),
        }


class RabbitCluster:
    """`size` nodes started and clustered by `start()`; `destroy()` stops them, drops their data."""

    def __init__(self, size: int = 3) -> None:
        self.root = Path(tempfile.mkdtemp(prefix="sv-rabbitcluster-"))
        tag = f"sv{os.getpid()}{self.root.name[-4:].lower()}"
        self.nodes = [
            RabbitNode(
                f"{tag}{chr(97 + i)}@localhost", free_port(), free_port(), self.root / str(i)
            )
            for i in range(size)
        ]
        owner = pwd.getpwnam("rabbitmq") if os.geteuid() == 0 else None
        for path in [self.root, *(n.base for n in self.nodes)]:
            path.mkdir(exist_ok=True)
            if owner is not None:
                os.chown(path, owner.pw_uid, owner.pw_gid)
        for node in self.nodes:
            (node.base / "enabled_plugins").write_text("[].\n")
            (node.base / "node.conf").write_text(CONFIG)

    def ctl(self, node: RabbitNode, *args: str, timeout: float = 60) -> str:
        done = subprocess.run(
            [CTL, "-n", node.name, *args],
            check=True,
            capture_output=True,
            text=True,
            timeout=timeout,
        )
        return done.stdout

    def urls(self, vhost: str = "") -> str:
        """Every node's URL, comma-separated, as SHAREVAULT_AMQP_URL takes a cluster."""
        return ",".join(node.url(vhost) for node in self.nodes)

    def start(self) -> RabbitCluster:
        """Start every node, then join the others to the first: one cluster."""
        for node in self.nodes:
            self._launch(node)
        for node in self.nodes:
            self._await(node)
        first = self.nodes[0]
        for node in self.nodes[1:]:
            self.ctl(node, "stop_app")
            self.ctl(node, "join_cluster", first.name)
            self.ctl(node, "start_app")
        return self

    def _launch(self, node: RabbitNode) -> None:
        subprocess.run(
            [SERVER, "-detached"], env=node.env(), check=True, capture_output=True, timeout=60
        )

    def _await(self, node: RabbitNode) -> None:
        self.ctl(node, "wait", str(node.base / "node.pid"), "--timeout", str(START_TIMEOUT),
                 timeout=START_TIMEOUT + 10)  # fmt: skip
        node.running = True

    def start_node(self, node: RabbitNode) -> None:
        """Start a stopped or killed node again; it rejoins its cluster by itself."""
        self._launch(node)
        self._await(node)

    def stop_node(self, node: RabbitNode) -> None:
        """A clean stop of the whole Erlang node (as `systemctl stop` would)."""
        self.ctl(node, "stop")
        node.running = False

    def kill_node(self, node: RabbitNode) -> None:
        """SIGKILL its beam.smp: a crash, no goodbye to clients or peers."""
        pid = int((node.base / "node.pid").read_text().strip())
        os.kill(pid, signal.SIGKILL)
        node.running = False
        deadline = time.monotonic() + 10
        while time.monotonic() < deadline and _alive(pid):
            time.sleep(0.05)

    def leader(self, queue: str, vhost: str = "/") -> RabbitNode | None:
        """The node that leads a quorum queue (asked of a running node)."""
        asking = next(n for n in self.nodes if n.running)
        out = self.ctl(asking, "list_queues", "-p", vhost, "name", "leader", "--quiet")
        for line in out.splitlines():
            parts = line.split()
            if len(parts) == 2 and parts[0] == queue:
                return next((n for n in self.nodes if n.name == parts[1]), None)
        return None

    def add_vhost(self, vhost: str) -> None:
        node = next(n for n in self.nodes if n.running)
        self.ctl(node, "add_vhost", vhost)
        self.ctl(node, "set_permissions", "-p", vhost, "guest", ".*", ".*", ".*")

    def destroy(self) -> None:
        for node in self.nodes:
            if node.running:
                try:
                    self.ctl(node, "stop", timeout=60)
                except (subprocess.SubprocessError, OSError):
                    self._kill_quietly(node)
            node.running = False
        shutil.rmtree(self.root, ignore_errors=True)

    def _kill_quietly(self, node: RabbitNode) -> None:
        try:
            os.kill(int((node.base / "node.pid").read_text().strip()), signal.SIGKILL)
        except (OSError, ValueError):
            pass


def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    return True
