"""Episode control groups: the real cgroup v1 hierarchy here; v2's files where it cannot run."""

from __future__ import annotations

import os
import subprocess
from pathlib import Path

import pytest

from agir_retrain.tasks.environment.cgroups import Controller, EpisodeGroups, _v2_mount, controller


@pytest.mark.skipif(os.geteuid() != 0, reason="making cgroups needs root here")
def test_an_episode_group_caps_kills_and_goes_away():
    pids, memory = controller("pids"), controller("memory")
    if pids is None or memory is None:
        pytest.skip("no pids or memory controller this process can use")
    groups = EpisodeGroups(pids, memory)
    groups.limit(processes=8, memory_bytes=64 << 20)
    paths = [path for _, path in groups.paths]
    sleeper = subprocess.Popen(["sleep", "60"])
    try:
        groups.add(sleeper.pid)
        for path in paths:
            assert str(sleeper.pid) in (path / "cgroup.procs").read_text().split()
        assert (groups.refused_forks(), groups.oom_kills()) == (0, 0)
        if pids.version == 1:
            assert (paths[0] / "pids.max").read_text().strip() == "8"
            assert int((paths[1] / "memory.limit_in_bytes").read_text()) == 64 << 20
        groups.kill_and_remove()
        assert sleeper.wait(timeout=10) == -9
        assert not any(path.exists() for path in paths)
    finally:
        sleeper.kill()
        sleeper.wait()


def test_the_v2_hierarchy_is_found_where_it_is_mounted():
    mounts = Path("/proc/self/mountinfo").read_text()
    found = _v2_mount()
    assert (found is not None) == (" - cgroup2 " in mounts)
    if found is not None:
        assert (found / "cgroup.controllers").exists()


def test_v2_limits_and_counters_use_v2_files(tmp_path):
    """cgroup v2's controllers are bound to v1 on this host, so v2's files are laid out in a
    folder: which files an episode group writes and reads, and what it writes there."""
    parent = tmp_path / "agir-sandbox"
    parent.mkdir()
    groups = EpisodeGroups(Controller("pids", parent, 2), Controller("memory", parent, 2))
    (path,) = {p for _, p in groups.paths}
    (path / "memory.swap.max").write_text("max")
    (path / "pids.events").write_text("max 3\n")
    (path / "memory.events").write_text("low 0\nhigh 0\nmax 9\noom 2\noom_kill 1\n")
    groups.limit(processes=16, memory_bytes=96 << 20)
    assert (path / "pids.max").read_text() == "16"
    assert (path / "memory.max").read_text() == str(96 << 20)
    assert (path / "memory.swap.max").read_text() == "0"  # no swap beyond the cap
    assert (groups.refused_forks(), groups.oom_kills()) == (3, 1)
