"""The docker backend on a real engine: the same Episode as bwrap, and the same isolation."""

from __future__ import annotations

import dataclasses
import json
import socket
import subprocess
import textwrap

import pytest

from agir_retrain.tasks.environment.contract import StoppedBy
from agir_retrain.tasks.environment.episode import run_episode
from agir_retrain.tasks.environment.sandbox_docker import LABEL

pytestmark = [pytest.mark.integration, pytest.mark.slow]

PROGRAMS = {
    "frees-known-junk": """
        import os
        for path in ["/var/log/app.log.1", "/var/cache/apt/archives/foo.deb"]:
            os.remove(path)
        print("freed")
    """,
    "deletes-protected": """
        import os
        os.remove("/etc/app/app.conf")
        os.truncate("/var/cache/apt/archives/foo.deb", 100)
    """,
    "older-than-30-days": """
        import os, time
        now = time.time()
        for folder, _dirs, files in os.walk("/var"):
            for name in files:
                path = os.path.join(folder, name)
                if now - os.path.getmtime(path) > 30 * 86400:
                    os.remove(path)
    """,
    "leaves-files-and-fails": """
        import shutil, subprocess, sys
        shutil.rmtree("/tmp/scratch")
        open("/home/agent/summary.txt", "w").write("x" * 123)
        print(subprocess.run(["du", "-s", "--apparent-size", "-b", "/root"], capture_output=True, text=True).stdout.split()[0])
        sys.exit(3)
    """,
    "memory-hog": """
        hoard = []
        while True:
            hoard.append(bytearray(16 << 20))
    """,
    "huge-file": """
        with open("/tmp/huge.bin", "wb") as out:
            while True:
                out.write(b"x" * (1 << 20))
    """,
    "fork-bomb": """
        import os
        while True:
            try:
                os.fork()
            except OSError:
                pass
    """,
    "loops-forever": "while True:\n    pass",
    "no-code": None,
}


@pytest.fixture(scope="module")
def docker_settings(docker_engine, bwrap_settings):
    """The bwrap test settings, on docker; the image is built here if missing."""
    from agir_retrain.tasks.environment.sandbox_docker import DockerSandbox

    DockerSandbox()  # builds the image once, outside any test's timing
    return bwrap_settings.model_copy(update={"backend": "docker"})


def _run(name, program, scenario, settings):
    completion = (
        "no code here" if program is None else f"```python\n{textwrap.dedent(program)}\n```"
    )
    return run_episode(
        task_id=name,
        model="m",
        sample=0,
        completion=completion,
        scenario=scenario,
        settings=settings,
    )


def _left_containers() -> list[str]:
    listing = subprocess.run(
        ["docker", "ps", "-aq", "--filter", f"label={LABEL}=episode"],
        capture_output=True, text=True, check=True, timeout=60,
    )  # fmt: skip
    return listing.stdout.split()


@pytest.mark.parametrize("name", sorted(PROGRAMS))
def test_the_same_program_gives_the_same_episode_on_docker_and_bwrap(
    name, small_scenario, bwrap_settings, docker_settings
):
    # a wall time well above what the slowest program needs on a loaded 2-core machine, so
    # a memory hog never races the clock on one backend and not the other
    slack = {"limits": bwrap_settings.limits.model_copy(update={"wall_s": 8})}
    on_bwrap = _run(name, PROGRAMS[name], small_scenario, bwrap_settings.model_copy(update=slack))
    on_docker = _run(name, PROGRAMS[name], small_scenario, docker_settings.model_copy(update=slack))
    assert on_docker.backend == "docker"
    neutral = {"seconds": 0.0, "backend": ""}
    assert dataclasses.replace(on_docker, **neutral) == dataclasses.replace(on_bwrap, **neutral)
    expected_stop = {
        "memory-hog": StoppedBy.MEMORY,
        "huge-file": StoppedBy.FILE_SIZE,
        "fork-bomb": StoppedBy.PROCESSES,
        "loops-forever": StoppedBy.TIMEOUT,
    }.get(name)
    assert on_docker.stopped_by is expected_stop
    assert _left_containers() == []


def test_docker_episodes_see_no_network_no_host_files_no_host_variables(
    small_scenario, docker_settings, tmp_path, monkeypatch
):
    monkeypatch.setenv("AGIR_TEST_SECRET_MARKER", "do-not-leak")
    secret = tmp_path / "host-secret.txt"
    secret.write_text("the host's secret")
    server = socket.socket()
    server.bind(("127.0.0.1", 0))
    server.listen(4)
    server.setblocking(False)
    program = f"""
        import json, os, socket
        out = {{"env": dict(os.environ), "uid": os.getuid(), "root": sorted(os.listdir("/root"))}}
        try:
            socket.create_connection(("127.0.0.1", {server.getsockname()[1]}), timeout=2).close()
            out["loopback"] = "connected"
        except OSError as exc:
            out["loopback"] = type(exc).__name__
        for name, path in [("secret", {str(secret)!r}), ("usr", "/usr/agir-was-here")]:
            try:
                open(path, "a").write("x")
                out[name] = "written"
            except OSError as exc:
                out[name] = exc.errno
        print(json.dumps(out))
    """
    episode = _run("probe", program, small_scenario, docker_settings)
    assert episode.exit_code == 0, episode.stderr_tail
    seen = json.loads(episode.stdout_tail)
    assert "do-not-leak" not in json.dumps(seen["env"])
    assert set(seen["env"]) <= {"PATH", "HOME", "LANG", "HOSTNAME", "PWD", "LC_CTYPE"}
    assert seen["uid"] == 1000
    assert seen["root"] == [".cache"]
    assert seen["loopback"] == "ConnectionRefusedError"
    assert seen["secret"] == 2  # ENOENT: the host's folders are not there
    assert seen["usr"] == 30  # EROFS
    assert secret.read_text() == "the host's secret"
    with pytest.raises(BlockingIOError):
        server.accept()
    server.close()
    assert _left_containers() == []
