"""CPU seconds and memory of processes, read from /proc while a phase runs."""

from __future__ import annotations

import os
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

CLK_TCK = os.sysconf("SC_CLK_TCK")
PAGE = os.sysconf("SC_PAGE_SIZE")
MB = 1024 * 1024


@dataclass(frozen=True, slots=True)
class Stat:
    ppid: int
    cpu: float  # own user + system seconds
    children_cpu: float  # seconds of children already reaped
    rss: int  # bytes


def read_stat(pid: int) -> Stat | None:
    """One /proc/<pid>/stat, or None when the process is gone."""
    try:
        raw = Path(f"/proc/{pid}/stat").read_text()
    except OSError:
        return None
    # The command name may hold spaces and parentheses: split after the last ')'.
    rest = raw[raw.rindex(")") + 2 :].split()
    return Stat(
        ppid=int(rest[1]),
        cpu=(int(rest[11]) + int(rest[12])) / CLK_TCK,
        children_cpu=(int(rest[13]) + int(rest[14])) / CLK_TCK,
        rss=int(rest[21]) * PAGE,
    )


def cmdline(pid: int) -> str:
    try:
        return Path(f"/proc/{pid}/cmdline").read_bytes().replace(b"\0", b" ").decode().strip()
    except OSError:
        return ""


def children_of(parent: int) -> list[int]:
    """Live processes whose parent is `parent`."""
    return parent_table().get(parent, [])


def parent_table() -> dict[int, list[int]]:
    """Every live process's children, from one pass over /proc."""
    table: dict[int, list[int]] = {}
    for entry in os.scandir("/proc"):
        if entry.name.isdigit():
            st = read_stat(int(entry.name))
            if st is not None:
                table.setdefault(st.ppid, []).append(int(entry.name))
    return table


def with_descendants(roots: list[int], table: dict[int, list[int]]) -> list[tuple[int, int]]:
    """(pid, parent) of each root and every process below it; a root's parent reads 0."""
    found = [(root, 0) for root in roots]
    for pid, _ in found:  # grows while it is walked: breadth first
        found.extend((child, pid) for child in table.get(pid, []))
    return found


def find_by_comm(name: str) -> list[int]:
    """Processes whose command name is exactly `name` (e.g. beam.smp)."""
    found = []
    for entry in os.scandir("/proc"):
        if not entry.name.isdigit():
            continue
        try:
            comm = Path(f"/proc/{entry.name}/comm").read_text().strip()
        except OSError:
            continue
        if comm == name:
            found.append(int(entry.name))
    return found


def postmaster_pid(data_directory: str) -> int | None:
    """The cluster's postmaster, from postmaster.pid in its data directory."""
    try:
        return int(Path(data_directory, "postmaster.pid").read_text().split()[0])
    except (OSError, ValueError, IndexError):
        return None


def cluster_cpu(postmaster: int) -> float:
    """Every process of the cluster: postmaster, live backends, and backends already exited."""
    st = read_stat(postmaster)
    if st is None:
        return 0.0
    total = st.cpu + st.children_cpu
    for pid in children_of(postmaster):
        child = read_stat(pid)
        if child is not None:
            total += child.cpu
    return total


def own_backends(postmaster: int, databases: set[str]) -> list[int]:
    """Backends connected to our databases plus the cluster's shared helpers (WAL writer, …)."""
    pids = []
    for pid in children_of(postmaster):
        # "postgres: 15/main: <user> <db> <host>(<port>) <state>" or "postgres: 15/main: walwriter"
        words = cmdline(pid).split()[1:]
        if words and words[0].endswith(":"):
            words = words[1:]
        if len(words) >= 3 and "(" in words[2]:
            if words[1] in databases:
                pids.append(pid)
        elif not ("autovacuum" in words and "worker" in words and not databases & set(words)):
            pids.append(pid)
    return pids


@dataclass
class Group:
    """A named set of processes whose CPU is followed pid by pid (exited ones keep their last);
    with `tree`, their child processes too (a service of several processes)."""

    name: str
    pids: Callable[[], list[int]]
    tree: bool = False
    base: dict[int, float] = field(default_factory=dict)
    last: dict[int, float] = field(default_factory=dict)
    parent: dict[int, int] = field(default_factory=dict)
    rss: int = 0

    def sample(self, first: bool, table: dict[int, list[int]] | None = None) -> None:
        rss = 0
        roots = self.pids()
        found = with_descendants(roots, table) if self.tree and table is not None else []
        listed = found or [(pid, 0) for pid in roots]
        seen = set()
        for pid, parent in listed:
            st = read_stat(pid)
            if st is None:
                continue
            seen.add(pid)
            value = st.cpu + st.children_cpu
            if pid not in self.base:
                # Present at the first sample: count from now; born later: count all of it.
                self.base[pid] = value if first else 0.0
            if parent:
                self.parent[pid] = parent
            self.last[pid] = value
            rss += st.rss
        self.rss = rss
        if self.tree:
            self._fold_reaped(seen)

    def _fold_reaped(self, seen: set[int]) -> None:
        # A child that is gone was reaped by its parent, whose reaped-children time now holds all
        # of its CPU: moving its base onto the parent's keeps the sum, and counts nothing twice.
        for pid in [p for p in self.parent if p not in seen]:
            parent = self.parent.pop(pid)
            if parent in self.base and pid in self.base:
                self.base[parent] += self.base.pop(pid)
                self.last.pop(pid, None)

    @property
    def cpu(self) -> float:
        return sum(self.last[pid] - self.base[pid] for pid in self.last)


class Probe:
    """Samples every group twice a second in a thread; phases read cumulative CPU and RSS series."""

    def __init__(self, interval: float = 0.5) -> None:
        self.interval = interval
        self.groups: dict[str, Group] = {}
        self.scalars: dict[str, Callable[[], float]] = {}
        self.series: dict[str, list[tuple[float, float]]] = {}
        self._lock = threading.Lock()
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._loop, name="probe", daemon=True)
        self.t0 = time.monotonic()

    def follow(self, name: str, pids: Callable[[], list[int]], *, tree: bool = False) -> None:
        with self._lock:
            group = Group(name, pids, tree)
            group.sample(first=False, table=parent_table() if tree else None)
            self.groups[name] = group
            self.series.setdefault(name, [])

    def follow_pid(self, name: str, pid: int) -> None:
        """One process and its children (a gateway of several processes is one service)."""
        self.follow(name, lambda: [pid], tree=True)

    def forget(self, name: str) -> None:
        with self._lock:
            self.groups.pop(name, None)

    def follow_scalar(self, name: str, read: Callable[[], float]) -> None:
        self.scalars[name] = read

    def start(self) -> None:
        self._thread.start()

    def stop(self) -> None:
        self._stop.set()
        self._thread.join(5)

    def _loop(self) -> None:
        while not self._stop.wait(self.interval):
            self.tick()

    def tick(self) -> None:
        now = time.monotonic() - self.t0
        with self._lock:
            # One pass over /proc per tick, whatever the number of groups that need it.
            table = parent_table() if any(g.tree for g in self.groups.values()) else None
            for name, group in self.groups.items():
                group.sample(first=False, table=table)
                self.series[name].append((now, group.rss / MB))

    def snapshot(self) -> dict[str, float]:
        """Cumulative CPU seconds of every group and scalar, right now."""
        self.tick()
        with self._lock:
            values = {name: g.cpu for name, g in self.groups.items()}
        for name, read in self.scalars.items():
            values[name] = read()
        return values

    def peak_rss(self, name: str, since: float, until: float) -> float:
        """Largest sampled RSS (MB) of a group inside a window of probe time."""
        points = [mb for t, mb in self.series.get(name, []) if since <= t <= until]
        return max(points, default=0.0)

    def now(self) -> float:
        return time.monotonic() - self.t0


def delta(before: dict[str, float], after: dict[str, float]) -> dict[str, float]:
    return {k: round(after[k] - before.get(k, 0.0), 3) for k in after}
