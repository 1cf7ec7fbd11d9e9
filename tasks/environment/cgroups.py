"""One episode's control groups: its processes and its memory, bounded as a whole.

Each controller (pids, memory) is taken from cgroup v1 where that hierarchy is mounted and
writable (as here: root, hybrid mode), else from cgroup v2 where its controller is available
and this process may create groups (root on a v2 host; a delegated subtree that already
hands the controllers down). An episode's groups sit in ``agir-sandbox/`` under this
process's own group of each hierarchy, so they also count against any limit the harness
itself is under. Where neither version offers a controller, the caller falls back (see
``sandbox_bwrap``).
"""

from __future__ import annotations

import itertools
import logging
import os
import signal
import time
from dataclasses import dataclass
from functools import cache
from pathlib import Path

log = logging.getLogger(__name__)

V1_ROOT = Path("/sys/fs/cgroup")
PARENT = "agir-sandbox"
_counter = itertools.count()


@dataclass(frozen=True, slots=True)
class Controller:
    """Where one controller's episode groups are made, and in which cgroup version."""

    name: str  # "pids" or "memory"
    parent: Path  # the agir-sandbox folder episode groups are made in
    version: int  # 1 or 2


def _own_paths() -> dict[str, str]:
    """This process's group in each hierarchy: {"pids": "/", ..., "": "/" (v2)}."""
    paths = {}
    for line in Path("/proc/self/cgroup").read_text().splitlines():
        _, controllers, path = line.split(":", 2)
        for name in controllers.split(",") if controllers else [""]:
            paths[name] = path
    return paths


def _v2_mount() -> Path | None:
    """Where the cgroup v2 hierarchy is mounted (``/sys/fs/cgroup`` or its ``unified``)."""
    for line in Path("/proc/self/mountinfo").read_text().splitlines():
        fields = line.split(" - ", 1)
        if len(fields) == 2 and fields[1].split()[0] == "cgroup2":
            return Path(fields[0].split()[4])
    return None


def _probe(parent: Path, version: int, name: str) -> bool:
    """Make the parent and one probe group in it, check the controller's files are there."""
    limit_file = {
        "pids": "pids.max",
        "memory": "memory.max" if version == 2 else "memory.limit_in_bytes",
    }[name]
    try:
        parent.mkdir(exist_ok=True)
        if version == 2:  # the parent hands the controller down to its episode groups
            (parent / "cgroup.subtree_control").write_text(f"+{name}")
        probe = parent / f"probe-{os.getpid()}-{next(_counter)}"
        probe.mkdir()
        try:
            return (probe / limit_file).exists()
        finally:
            probe.rmdir()
    except OSError as exc:
        log.debug("no %s cgroup v%d at %s: %s", name, version, parent, exc)
        return False


@cache
def controller(name: str) -> Controller | None:
    """The place this process makes episode groups for ``name`` (pids or memory), or None."""
    own = _own_paths()
    v1 = V1_ROOT / name
    if name in own and (v1 / "cgroup.procs").exists():
        parent = v1 / own[name].lstrip("/") / PARENT
        if _probe(parent, 1, name):
            _sweep(parent)
            return Controller(name, parent, 1)
    mount = _v2_mount()
    if mount is not None and "" in own:
        group = mount / own[""].lstrip("/")
        candidates = [mount / PARENT] if own[""] == "/" or os.geteuid() == 0 else []
        if name in (group / "cgroup.subtree_control").read_text().split():
            candidates.append(group / PARENT)  # a delegated group that hands it down
        if os.geteuid() == 0:  # the v2 root may hold processes and hand controllers down
            try:
                (mount / "cgroup.subtree_control").write_text(f"+{name}")
            except OSError:
                pass
        for parent in candidates:
            if name in (parent.parent / "cgroup.controllers").read_text().split() and _probe(
                parent, 2, name
            ):
                _sweep(parent)
                return Controller(name, parent, 2)
    log.info("no %s controller this process can use (cgroup v1 or v2)", name)
    return None


def _sweep(parent: Path) -> None:
    """Remove episode groups left by processes killed mid-episode (empty ones only)."""
    for stale in parent.glob("ep-*"):
        pid = stale.name.split("-")[1]
        if pid.isdigit() and not Path(f"/proc/{pid}").exists():
            try:
                stale.rmdir()  # fails, harmlessly, while a process is still inside
            except OSError:
                pass


class EpisodeGroups:
    """One episode's groups: a process cap, a memory cap, their counters, a kill switch."""

    def __init__(self, pids: Controller | None, memory: Controller | None) -> None:
        self.paths: list[tuple[Controller, Path]] = []
        name = f"ep-{os.getpid()}-{next(_counter)}"
        for found in (pids, memory):
            if found is not None:
                path = found.parent / name
                if not any(made == path for _, made in self.paths):  # v2: one group for both
                    path.mkdir()
                self.paths.append((found, path))

    def limit(self, *, processes: int, memory_bytes: int) -> None:
        """Set the caps: at most ``processes`` tasks, ``memory_bytes`` of memory, no swap."""
        for found, path in self.paths:
            if found.name == "pids":
                (path / "pids.max").write_text(str(processes))
            elif found.version == 1:
                (path / "memory.limit_in_bytes").write_text(str(memory_bytes))
                swap = path / "memory.memsw.limit_in_bytes"
                if swap.exists():  # memory and swap together: no swap beyond the cap
                    swap.write_text(str(memory_bytes))
            else:
                (path / "memory.max").write_text(str(memory_bytes))
                swap = path / "memory.swap.max"
                if swap.exists():
                    swap.write_text("0")

    @property
    def has_pids(self) -> bool:
        """Whether the episode's processes are counted by a pids group."""
        return any(found.name == "pids" for found, _ in self.paths)

    @property
    def has_memory(self) -> bool:
        """Whether the episode's memory is bounded by a memory group."""
        return any(found.name == "memory" for found, _ in self.paths)

    def add(self, pid: int) -> None:
        """Move a process into every group; its later children are born in them."""
        for path in dict.fromkeys(path for _, path in self.paths):
            fd = os.open(path / "cgroup.procs", os.O_WRONLY)
            try:
                os.write(fd, str(pid).encode())
            finally:
                os.close(fd)

    def refused_forks(self) -> int | None:
        """Forks the pids group refused (None without one)."""
        for found, path in self.paths:
            if found.name == "pids":
                return _counter_value(path / "pids.events", "max")
        return None

    def oom_kills(self) -> int | None:
        """Processes the memory group's OOM killer ended (None without one)."""
        for found, path in self.paths:
            if found.name == "memory":
                events = "memory.oom_control" if found.version == 1 else "memory.events"
                return _counter_value(path / events, "oom_kill")
        return None

    def kill_and_remove(self) -> None:
        """Kill whatever is left in the groups, then remove them (bounded: a few seconds)."""
        for path in dict.fromkeys(path for _, path in self.paths):
            _empty(path)
            for _ in range(100):
                try:
                    path.rmdir()
                    break
                except FileNotFoundError:
                    break
                except OSError:  # the last process is still being reaped
                    time.sleep(0.01)
            else:
                log.warning("could not remove cgroup %s", path)


def _counter_value(path: Path, key: str) -> int:
    for line in path.read_text().splitlines():
        name, _, value = line.partition(" ")
        if name == key:
            return int(value)
    return 0


def _empty(path: Path) -> None:
    procs = path / "cgroup.procs"
    deadline = time.monotonic() + 10
    while True:
        try:
            pids = [int(p) for p in procs.read_text().split()]
        except FileNotFoundError:
            return
        if not pids:
            return
        for pid in pids:
            try:
                os.kill(pid, signal.SIGKILL)
            except ProcessLookupError:
                pass
        if time.monotonic() > deadline:
            log.warning("processes %s outlived their episode's cgroup %s", pids, path)
            return
        time.sleep(0.01)
