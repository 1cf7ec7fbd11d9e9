"""Safety shown on a real bubblewrap: no network, no host files, no host environment, limits.

Each test runs a hand-written program through ``run_episode`` and checks both what the
program saw and that the host is as it was (no process left, no file outside the copy).
"""

from __future__ import annotations

import json
import os
import socket
import textwrap
import time
from pathlib import Path

import psutil
import pytest

from agir_retrain.tasks.environment.cgroups import controller
from agir_retrain.tasks.environment.contract import StoppedBy
from agir_retrain.tasks.environment.episode import run_episode


def _run(program: str, scenario, settings, **changes):
    if changes:
        settings = settings.model_copy(update=changes)
    completion = f"```python\n{textwrap.dedent(program)}\n```"
    return run_episode(
        task_id="t",
        model="m",
        sample=0,
        completion=completion,
        scenario=scenario,
        settings=settings,
    )


def _report(episode) -> dict:
    """The JSON a probe program printed last."""
    assert episode.exit_code == 0, episode.stderr_tail
    return json.loads(episode.stdout_tail.strip().splitlines()[-1])


@pytest.fixture
def host_unchanged():
    """Fails the test if a process of a sandbox outlives it or an episode cgroup is left."""
    before = set(psutil.pids())
    yield
    deadline = time.monotonic() + 5
    while True:
        left = []
        for pid in set(psutil.pids()) - before:
            try:
                cmdline = " ".join(psutil.Process(pid).cmdline())
            except (psutil.NoSuchProcess, psutil.ZombieProcess, psutil.AccessDenied):
                continue
            if "bwrap" in cmdline or "/agir/program.py" in cmdline:
                left.append((pid, cmdline))
        if not left or time.monotonic() > deadline:
            break
        time.sleep(0.1)
    assert left == []
    for name in ("pids", "memory"):
        found = controller(name)
        if found is not None:
            mine = f"ep-{os.getpid()}-"
            assert [p.name for p in found.parent.iterdir() if p.name.startswith(mine)] == []


def test_no_network_not_even_the_hosts_loopback(small_scenario, bwrap_settings, host_unchanged):
    server = socket.socket()
    server.bind(("127.0.0.1", 0))
    server.listen(4)
    server.setblocking(False)
    port = server.getsockname()[1]
    with socket.create_connection(("127.0.0.1", port), timeout=2):  # the host reaches it
        pass
    server.accept()[0].close()
    program = f"""
        import json, socket
        out = {{}}
        for name, address in [("loopback", ("127.0.0.1", {port})), ("outside", ("1.1.1.1", 53))]:
            try:
                socket.create_connection(address, timeout=2).close()
                out[name] = "connected"
            except OSError as exc:
                out[name] = type(exc).__name__
        try:
            socket.getaddrinfo("example.com", 80)
            out["dns"] = "resolved"
        except OSError as exc:
            out["dns"] = type(exc).__name__
        out["interfaces"] = [name for _, name in socket.if_nameindex()]
        print(json.dumps(out))
    """
    seen = _report(_run(program, small_scenario, bwrap_settings))
    assert seen["loopback"] == "ConnectionRefusedError"  # its own empty loopback
    assert seen["outside"] in {"OSError", "TimeoutError"}  # network unreachable
    assert seen["dns"] == "gaierror"
    assert seen["interfaces"] == ["lo"]
    with pytest.raises(BlockingIOError):  # nothing ever reached the host's server
        server.accept()
    server.close()


def test_host_files_are_neither_readable_nor_writable(
    small_scenario, bwrap_settings, tmp_path, host_unchanged
):
    secret = tmp_path / "host-secret.txt"
    secret.write_text("the host's secret")
    planted = tmp_path / "planted.txt"
    root_entries = sorted(os.listdir("/root"))
    program = f"""
        import json, os
        out = {{}}
        def attempt(name, action):
            try:
                action()
                out[name] = "ok"
            except OSError as exc:
                out[name] = exc.errno
        attempt("read_secret", lambda: open({str(secret)!r}).read())
        attempt("write_planted", lambda: open({str(planted)!r}, "w").write("x"))
        attempt("write_usr", lambda: open("/usr/agir-was-here", "w").write("x"))
        attempt("remove_usr", lambda: os.remove("/usr/bin/python3"))
        attempt("rewrite_program", lambda: open("/agir/program.py", "w").write("x"))
        attempt("passwd", lambda: open("/etc/passwd").read())
        attempt("mount", lambda: os.rmdir("/proc"))
        out["top"] = sorted(os.listdir("/"))
        out["root"] = sorted(os.listdir("/root"))
        out["etc"] = sorted(os.listdir("/etc"))
        out["pids"] = sorted(int(p) for p in os.listdir("/proc") if p.isdigit())
        out["uid"] = os.getuid()
        out["cap_eff"] = [l.split()[1] for l in open("/proc/self/status") if l.startswith("CapEff")][0]
        print(json.dumps(out))
    """
    seen = _report(_run(program, small_scenario, bwrap_settings))
    assert seen["read_secret"] == 2  # ENOENT: the host's folders are not there at all
    assert seen["write_planted"] == 2
    assert seen["write_usr"] == 30  # EROFS: the system folders are read-only
    assert seen["remove_usr"] == 30
    assert seen["rewrite_program"] == 30
    assert seen["passwd"] == 2  # /etc is the scenario's own, without the host's passwd
    assert seen["top"] == [
        "agir",
        "bin",
        "dev",
        "etc",
        "home",
        "lib",
        "lib64",
        "opt",
        "proc",
        "root",
        "sbin",
        "srv",
        "tmp",
        "usr",
        "var",
    ]
    assert seen["root"] == [".cache"]  # the scenario's /root, not the host's
    assert seen["etc"] == ["app"]
    assert len(seen["pids"]) <= 3  # its own pid namespace: bwrap's init, the program
    assert seen["uid"] == 1000
    assert seen["cap_eff"] == "0000000000000000"
    assert secret.read_text() == "the host's secret"
    assert not planted.exists()
    assert not Path("/usr/agir-was-here").exists()
    assert sorted(os.listdir("/root")) == root_entries


def test_no_host_environment_variable_is_seen(
    small_scenario, bwrap_settings, monkeypatch, host_unchanged
):
    monkeypatch.setenv("AGIR_TEST_SECRET_MARKER", "do-not-leak")
    program = "import json, os; print(json.dumps(dict(os.environ)))"
    seen = _report(_run(program, small_scenario, bwrap_settings))
    assert "do-not-leak" not in json.dumps(seen)
    assert set(seen) <= {"PATH", "HOME", "LANG", "HOSTNAME", "PWD", "LC_CTYPE"}
    assert seen["HOME"] == "/root"


def test_a_fork_bomb_is_stopped_by_the_process_limit(
    small_scenario, bwrap_settings, host_unchanged
):
    program = """
        import os
        while True:
            try:
                os.fork()
            except OSError:
                pass
    """
    episode = _run(program, small_scenario, bwrap_settings)
    expected = StoppedBy.PROCESSES if controller("pids") is not None else StoppedBy.TIMEOUT
    assert episode.stopped_by is expected
    assert episode.exit_code == 137
    assert episode.success is False


def test_a_memory_hog_is_stopped_by_the_memory_limit(
    small_scenario, bwrap_settings, host_unchanged
):
    program = """
        hoard = []
        while True:
            hoard.append(bytearray(16 << 20))
    """
    limits = bwrap_settings.limits.model_copy(update={"wall_s": 10})  # slack for a loaded machine
    episode = _run(program, small_scenario, bwrap_settings, limits=limits)
    assert episode.stopped_by is StoppedBy.MEMORY
    assert episode.exit_code == 1
    assert episode.stderr_tail.rstrip().endswith("MemoryError")
    assert episode.seconds < limits.wall_s


def test_an_infinite_loop_is_stopped_at_the_wall_time(
    small_scenario, bwrap_settings, host_unchanged
):
    episode = _run(
        "while True:\n    pass",
        small_scenario,
        bwrap_settings,
        limits=bwrap_settings.limits.model_copy(update={"wall_s": 1.5}),
    )
    assert episode.stopped_by is StoppedBy.TIMEOUT
    assert episode.exit_code == 137  # SIGKILL, as a shell or docker reports it
    assert 1.5 <= episode.seconds < 5


def test_a_huge_file_is_stopped_at_the_file_size_limit(
    small_scenario, bwrap_settings, host_unchanged
):
    limit = bwrap_settings.limits.file_size_mb << 20
    program = """
        with open("/tmp/huge.bin", "wb") as out:
            while True:
                out.write(b"x" * (1 << 20))
    """
    host_tmp = set(os.listdir("/tmp"))
    episode = _run(program, small_scenario, bwrap_settings)
    assert episode.stopped_by is StoppedBy.FILE_SIZE
    assert episode.exit_code == 1
    # what it wrote stayed in its copy, cut at the limit (and its name counts too)
    assert episode.new_bytes == limit + len("huge.bin")
    assert "huge.bin" not in set(os.listdir("/tmp")) - host_tmp


def test_background_processes_die_with_the_episode(small_scenario, bwrap_settings, host_unchanged):
    program = """
        import os, time
        if os.fork() == 0:
            os.setsid()
            if os.fork() == 0:
                time.sleep(60)
                open("/tmp/late.txt", "w").write("still alive")
            os._exit(0)
        print("parent done")
    """
    episode = _run(program, small_scenario, bwrap_settings)
    assert (episode.exit_code, episode.stopped_by) == (0, None)
    assert episode.seconds < 2  # the daemon did not hold the episode open


def test_dev_is_read_only_and_dev_shm_is_capped(small_scenario, bwrap_settings, host_unchanged):
    program = """
        import json, os
        out = {}
        try:
            open("/dev/planted", "w")
            out["dev"] = "written"
        except OSError as exc:
            out["dev"] = exc.errno
        written = 0
        try:
            for index in range(100):  # files of 1 MiB: under the file-size limit
                with open(f"/dev/shm/fill{index}", "wb") as fill:
                    fill.write(b"x" * (1 << 20))
                written += 1
        except OSError as exc:
            out["shm"] = exc.errno
        out["shm_mib"] = written
        open("/dev/null", "w").write("devices still work")
        print(json.dumps(out))
    """
    seen = _report(_run(program, small_scenario, bwrap_settings))
    assert seen["dev"] == 30  # EROFS
    # ENOSPC: /dev/shm is the episode's own bounded filesystem (16 MiB free in these tests)
    assert seen["shm"] == 28
    assert seen["shm_mib"] <= 64


@pytest.mark.slow  # ~3 s: the harness as uid 1000 (staged once per session)
def test_without_a_pids_cgroup_a_non_root_user_gets_rlimit_nproc(
    unprivileged, small_scenario, bwrap_settings
):
    """The fallback: no cgroup can be made as uid 1000, so RLIMIT_NPROC stops the fork bomb.

    Runs wherever the checkout lives: the harness user's modules are staged where it can read.
    """
    import json as json_module

    from agir_retrain.tasks.environment.scenario import scenario_to_json

    settings = bwrap_settings.model_dump() | {"work_dir": str(unprivileged.work_dir)}
    settings["limits"] = settings["limits"] | {"wall_s": 5, "processes": 16}
    seen = unprivileged.request(
        op="episode",
        program="import os\nwhile True:\n    os.fork()\n",
        scenario=json_module.loads(scenario_to_json(small_scenario)),
        settings=settings,
    )
    assert unprivileged.request(op="sandbox", settings=settings)["pids"] is False
    assert seen["stopped_by"] == "processes"
    assert seen["exit_code"] == 1
    assert seen["seconds"] < 5
