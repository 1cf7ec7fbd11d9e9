"""Jobs on a real Docker engine: outputs come back, failures reach the caller, nothing is left."""

from __future__ import annotations

import os
import shutil
import time
from pathlib import Path

import docker
import pytest

from agir_retrain.tasks.delivery.docker_jobs import (
    DEFAULT_USER,
    LABEL,
    DockerJob,
    Mount,
    run_docker_job,
)
from agir_retrain.tasks.delivery.job_output import JobTimeoutError
from agir_retrain.tasks.errors import ConfigError, SubmitError

pytestmark = pytest.mark.integration


def _context(folder: Path, busybox: Path, extra: str = "") -> Path:
    folder.mkdir(parents=True, exist_ok=True)
    shutil.copy(busybox, folder / "busybox")
    (folder / "test-id").write_text(
        str(folder)
    )  # a context of its own: no image from another test fits
    (folder / "Dockerfile").write_text(
        "FROM scratch\n"
        "COPY busybox /bin/busybox\n"
        "COPY test-id /test-id\n"
        'RUN ["/bin/busybox", "--install", "-s", "/bin"]\n'
        f"{extra}"
        'ENTRYPOINT ["/bin/sh", "-c"]\n'
    )
    return folder


def _state() -> tuple[set[str], set[str]]:
    """Our containers and every dangling image the engine holds."""
    client = docker.from_env()
    containers = {c.id for c in client.containers.list(all=True, filters={"label": LABEL})}
    dangling = {i.id for i in client.images.list(filters={"dangling": True})}
    return containers, dangling


@pytest.fixture
def engine_state():
    """Fails the test if it leaves a container of ours or a new dangling image."""
    _containers, dangling_before = _state()
    yield
    containers, dangling_after = _state()
    assert containers == set()
    assert dangling_after - dangling_before == set()


def _job(context: Path, tmp_path: Path, script: str, **options) -> DockerJob:
    (tmp_path / "data").mkdir(exist_ok=True)
    (tmp_path / "data" / "train.jsonl").write_text('{"prompt": "p"}\n')
    return DockerJob(
        context=context,
        repository="agir-retrain-test",
        command=[script],
        mounts=(
            Mount(host=tmp_path / "data", container="/data"),
            Mount(host=tmp_path / "out", container="/out", read_only=False),
        ),
        env={"GREETING": "hello"},
        **({"timeout_s": 120} | options),
    )


def test_outputs_come_back_and_nothing_is_left(docker_engine, busybox, tmp_path, engine_state):
    context = _context(tmp_path / "ctx", busybox)
    lines: list[str] = []
    script = "echo $GREETING from the job; wc -l < /data/train.jsonl > /out/rows.txt; echo done"
    result = run_docker_job(_job(context, tmp_path, script), on_line=lines.append)
    assert result.returncode == 0
    assert (tmp_path / "out" / "rows.txt").read_text().strip() == "1"
    assert "hello from the job" in lines
    assert result.log_tail.endswith("done")


def test_a_failing_job_raises_its_own_error_and_status_and_leaves_nothing(
    docker_engine, busybox, tmp_path
):
    context = _context(tmp_path / "ctx", busybox)
    script = (
        "echo 'loading the model'; echo 'CUDA out of memory: tried to allocate 2 GiB' >&2; exit 3"
    )
    with pytest.raises(SubmitError) as failure:
        run_docker_job(_job(context, tmp_path, script))
    assert failure.value.returncode == 3
    assert "CUDA out of memory" in failure.value.log_tail
    assert "exit status 3" in str(failure.value)


def test_the_dataset_is_mounted_read_only(docker_engine, busybox, tmp_path):
    context = _context(tmp_path / "ctx", busybox)
    with pytest.raises(SubmitError) as failure:
        run_docker_job(_job(context, tmp_path, "echo x > /data/train.jsonl"))
    assert "Read-only file system" in failure.value.log_tail


def test_an_unchanged_context_reuses_the_image(docker_engine, busybox, tmp_path):
    context = _context(tmp_path / "ctx", busybox)
    (context / ".dockerignore").write_text("notes.txt\n")
    first = run_docker_job(_job(context, tmp_path, "true"))
    again = run_docker_job(_job(context, tmp_path, "true"))
    assert (first.reused_image, again.reused_image) == (False, True)
    assert first.image == again.image
    (context / "notes.txt").write_text("ignored by .dockerignore: the build never sees it")
    assert run_docker_job(_job(context, tmp_path, "true")).image == first.image
    (context / "extra.txt").write_text("a new file the build does see")
    changed = run_docker_job(_job(context, tmp_path, "true"))
    assert changed.reused_image is False
    assert changed.image != first.image


def test_a_failed_build_raises_and_leaves_nothing(docker_engine, busybox, tmp_path, engine_state):
    context = _context(
        tmp_path / "ctx", busybox, extra='RUN ["/bin/sh", "-c", "echo broken step; exit 7"]\n'
    )
    with pytest.raises(SubmitError) as failure:
        run_docker_job(_job(context, tmp_path, "true"))
    assert "docker build" in str(failure.value)
    assert "broken step" in failure.value.log_tail


def _confinement_report(docker_engine, busybox, tmp_path, **options) -> tuple[list[str], Path]:
    context = _context(tmp_path / "ctx", busybox)
    script = (
        "echo uid=$(id -u); echo net=$(ls /sys/class/net | tr '\\n' ' ');"
        "echo mem=$(cat /sys/fs/cgroup/memory.max 2>/dev/null || cat /sys/fs/cgroup/memory/memory.limit_in_bytes);"
        "echo pids=$(cat /sys/fs/cgroup/pids.max 2>/dev/null || cat /sys/fs/cgroup/pids/pids.max);"
        "echo data=$(ls /data | tr '\\n' ' '); echo made > /out/made.txt"
    )
    lines: list[str] = []
    run_docker_job(_job(context, tmp_path, script, **options), on_line=lines.append)
    return lines, tmp_path / "out" / "made.txt"


def test_a_job_is_confined_and_its_outputs_are_the_callers(docker_engine, busybox, tmp_path):
    lines, made = _confinement_report(
        docker_engine, busybox, tmp_path, memory_limit="256m", pids_limit=64
    )
    report = dict(line.split("=", 1) for line in lines if "=" in line)
    assert report["uid"] != "0"  # never root, even when the caller is
    if os.geteuid() == 0:
        assert report["uid"] == DEFAULT_USER.split(":")[0]
    assert report["net"].split() == ["lo"]  # no network unless asked
    assert report["mem"] == str(256 << 20)
    assert report["pids"] == "64"
    assert (made.stat().st_uid, made.stat().st_gid) == (os.getuid(), os.getgid())


def test_the_network_is_given_only_when_asked(docker_engine, busybox, tmp_path):
    lines, _ = _confinement_report(docker_engine, busybox, tmp_path, network=True)
    report = dict(line.split("=", 1) for line in lines if "=" in line)
    assert "eth0" in report["net"].split()


def test_a_single_file_mount_shows_only_that_file(docker_engine, busybox, tmp_path):
    context = _context(tmp_path / "ctx", busybox)
    (tmp_path / "dataset").mkdir()
    (tmp_path / "dataset" / "train.jsonl").write_text("row\n")
    (tmp_path / "dataset" / "secret.txt").write_text("not for the job\n")
    job = DockerJob(
        context=context,
        repository="agir-retrain-test",
        command=["ls -A /data; cat /data/train.jsonl"],
        mounts=(
            Mount(host=tmp_path / "dataset" / "train.jsonl", container="/data/train.jsonl"),
            Mount(host=tmp_path / "out", container="/out", read_only=False),
        ),
        timeout_s=120,
    )
    result = run_docker_job(job)
    assert result.log_tail.splitlines()[-2:] == ["train.jsonl", "row"]  # after the build's lines
    assert "secret.txt" not in result.log_tail


def test_a_job_past_its_deadline_is_stopped_removed_and_reported(
    docker_engine, busybox, tmp_path, engine_state
):
    context = _context(tmp_path / "ctx", busybox)
    run_docker_job(_job(context, tmp_path, "true"))  # build first: the deadline is the job's
    started = time.monotonic()
    with pytest.raises(JobTimeoutError, match="timed out: stopped after 3 s") as failure:
        run_docker_job(_job(context, tmp_path, "echo started; sleep 600", timeout_s=3))
    assert time.monotonic() - started < 60
    assert "started" in failure.value.log_tail


def test_a_root_user_is_refused(docker_engine, busybox, tmp_path):
    context = _context(tmp_path / "ctx", busybox)
    with pytest.raises(SubmitError, match="refusing to run a job as root"):
        run_docker_job(_job(context, tmp_path, "true", user="0:0"))


@pytest.mark.skipif(os.geteuid() != 0, reason="only a root caller's job runs as another user")
def test_a_mount_the_jobs_user_cannot_read_is_refused_before_anything_starts(
    docker_engine, busybox, tmp_path, engine_state
):
    context = _context(tmp_path / "ctx", busybox)
    job = _job(context, tmp_path, "cat /data/train.jsonl")
    (tmp_path / "data" / "train.jsonl").chmod(0o600)  # as save_pretrained leaves a model
    lines: list[str] = []
    with pytest.raises(
        ConfigError,
        match=r"train\.jsonl \(mode 0600, owner 0:0\) is not readable "
        r"by the docker job's user 1000:1000.*chmod -R a\+rX",
    ):
        run_docker_job(job, on_line=lines.append)
    assert lines == []  # refused before the build
    (tmp_path / "data" / "train.jsonl").chmod(0o644)
    assert run_docker_job(job).log_tail.splitlines()[-1] == '{"prompt": "p"}'


# What the job sees of its own confinement: seccomp mode, capabilities, no-new-privileges,
# how many mounts cover parts of /proc (docker's masked and read-only paths), user, network.
_SECURITY_REPORT = (
    "grep -E '^(Seccomp|CapEff|NoNewPrivs):' /proc/self/status | tr -d '\\t';"
    "echo proc_covers=$(grep -c ' /proc/' /proc/mounts);"
    "echo uid=$(id -u); echo net=$(ls /sys/class/net | tr '\\n' ' ')"
)


@pytest.mark.parametrize("nested", [False, True])
def test_only_a_nested_sandbox_gets_seccomp_off_and_proc_unmasked(
    docker_engine, busybox, tmp_path, engine_state, nested
):
    context = _context(tmp_path / "ctx", busybox)
    result = run_docker_job(_job(context, tmp_path, _SECURITY_REPORT, nested_sandbox=nested))
    report = dict(line.split("=", 1) if "=" in line else line.split(":", 1)
                  for line in result.log_tail.splitlines()[-6:])  # fmt: skip
    # what a nested sandbox is given: seccomp off (0, else 2: filtered) and /proc whole
    assert report["Seccomp"] == ("0" if nested else "2")
    assert (report["proc_covers"] == "0") is nested
    # what it keeps, as every job: no capabilities, no privilege gain, not root, no network
    assert report["CapEff"] == "0000000000000000"
    assert report["NoNewPrivs"] == "1"
    assert report["uid"] != "0"
    assert report["net"].split() == ["lo"]
