"""Training jobs on this machine or in the GPU image on a Docker engine.

- ``local`` runs ``accelerate launch -m agir_retrain.tasks.training`` as a child process
  on this machine, streams its log, keeps its exit status, and stops it (its whole process
  group) at ``submit.timeout_s``.
- ``docker`` builds the GPU image (reused while the build context is unchanged) and runs
  it on the Docker engine as a non-root user, with the network off unless
  ``submit.network`` is set, memory and process limits from the settings, and only the
  files the job reads mounted, read-only (``docker_jobs.py``).

The one entry point that picks a backend (these two, or ``prefect``, which needs
Prefect) is ``agir_retrain.flows.train.submit``. A failed job raises ``SubmitError``
with the job's own exit status and last lines; one stopped at its deadline raises
``JobTimeoutError``.
"""

from __future__ import annotations

import logging
import os
import shlex
import signal
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

from agir_retrain.tasks.delivery.docker_jobs import DockerJob, Mount, run_docker_job
from agir_retrain.tasks.delivery.job_output import JobTimeoutError, LogTail, follow
from agir_retrain.tasks.delivery.package_data import (
    DOCKERFILE_IN_CONTEXT,
    accelerate_configs_dir,
    write_build_context,
)
from agir_retrain.tasks.delivery.remote import upload_folder
from agir_retrain.tasks.errors import ConfigError, SubmitError
from agir_retrain.tasks.io import is_url, local_path
from agir_retrain.tasks.settings.submit import LaunchSettings
from agir_retrain.tasks.settings.train import TrainConfig

log = logging.getLogger(__name__)


@dataclass(frozen=True, slots=True, kw_only=True)
class JobResult:
    """What a finished job left: its exit status, where its outputs are, its log's last lines."""

    returncode: int
    out: str
    log_tail: str


def accelerate_config_path(launch: LaunchSettings) -> Path:
    """The accelerate config file: a named one from container/accelerate/, or a path."""
    name = launch.accelerate_config or ("single_gpu" if launch.num_processes == 1 else "ddp")
    configs = accelerate_configs_dir()
    path = (
        configs / f"{name}.yaml" if "/" not in name and not name.endswith(".yaml") else Path(name)
    )
    if not path.is_file():
        known = sorted(p.stem for p in configs.glob("*.yaml"))
        raise ConfigError(
            f"launch.accelerate_config={name!r}: no file {path}; use one of {known} or a path"
        )
    return path


def cpu_threads_per_process(launch: LaunchSettings) -> int:
    """Threads each rank computes with on CPU: the setting, else OMP_NUM_THREADS, else a share.

    accelerate sets OMP_NUM_THREADS=1 for any launch not marked CPU-only, which on a machine
    without a GPU trains on one core of many (measured: docs/benchmarks.md).
    """
    if launch.cpu_threads_per_process is not None:
        return launch.cpu_threads_per_process
    if os.environ.get("OMP_NUM_THREADS", "").isdigit() and int(os.environ["OMP_NUM_THREADS"]) > 0:
        return int(os.environ["OMP_NUM_THREADS"])
    return max(1, len(os.sched_getaffinity(0)) // launch.num_processes)


def accelerate_command(config_file: str | Path, launch: LaunchSettings) -> list[str]:
    """The command that runs the training program under ``accelerate launch``."""
    return [
        sys.executable, "-m", "accelerate.commands.launch",
        "--config_file", str(accelerate_config_path(launch)),
        "--num_processes", str(launch.num_processes),
        "--num_cpu_threads_per_process", str(cpu_threads_per_process(launch)),
        "--main_process_port", str(launch.main_process_port),
        "-m", "agir_retrain.tasks.training",
        "--config", str(config_file),
    ]  # fmt: skip


def run_streaming(
    command: list[str],
    *,
    env: dict[str, str] | None = None,
    on_line: Callable[[str], None] | None = None,
    timeout_s: float | None = None,
) -> tuple[int, str]:
    """Run a command, passing each output line to ``on_line`` (else the log); return (status, tail).

    The command gets a process group of its own; past ``timeout_s`` the whole group
    (``accelerate launch`` and its ranks) is stopped and ``JobTimeoutError`` raised.
    """
    tail = LogTail(on_line)
    deadline = time.monotonic() + (timeout_s if timeout_s is not None else float("inf"))
    process = subprocess.Popen(
        command,
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        env={**os.environ, **(env or {})},
        start_new_session=True,  # its own group: a deadline stops every process it started
    )
    if process.stdout is None:  # stdout=PIPE always gives one
        raise RuntimeError("no output pipe")
    try:
        ended = follow(iter(lambda: process.stdout.read1(1 << 16), b""), tail, deadline)
        if ended:
            left = deadline - time.monotonic()
            try:
                process.wait(timeout=None if left == float("inf") else max(left, 0.001))
            except subprocess.TimeoutExpired:  # closed its output but still runs
                ended = False
    except BaseException:
        _stop_group(process)
        raise
    if not ended:
        _stop_group(process)
        raise JobTimeoutError(shlex.join(command), timeout_s or 0, tail.text)
    process.stdout.close()
    return process.returncode, tail.text


def _stop_group(process: subprocess.Popen[bytes], grace_s: float = 10.0) -> None:
    """Stop a process and everything in its group: SIGTERM, then SIGKILL after a grace."""
    for sig, wait_s in ((signal.SIGTERM, grace_s), (signal.SIGKILL, 30.0)):
        try:
            os.killpg(process.pid, sig)
        except ProcessLookupError:
            break
        try:
            process.wait(timeout=wait_s)
            break
        except subprocess.TimeoutExpired:
            continue
    if process.stdout is not None:
        process.stdout.close()


def submit_local(config: TrainConfig, on_line: Callable[[str], None] | None = None) -> JobResult:
    """Train on this machine under ``accelerate launch``; raise ``SubmitError`` if it fails.

    Always a child process, whoever calls (the CLI, a flow, a deployment's worker): the
    deadline can stop it, and a crash in it cannot take the caller down. When ``out`` is a
    URL (shared storage), the job writes to a local folder first and the finished outputs
    are uploaded file by file.
    """
    from agir_retrain.tasks.filenames import CONFIG_FILE
    from agir_retrain.tasks.models.resolve import converts_gguf, resolve_model
    from agir_retrain.tasks.training.outputs import write_config

    if converts_gguf(config.base_model):
        # Converted here, once, before any rank starts: a file transformers cannot read
        # stops the command in one line, and the ranks load the folder.
        config = config.model_copy(update={"base_model": resolve_model(config.base_model)})
    if is_url(config.out):
        with tempfile.TemporaryDirectory(prefix="agir-train-") as staging:
            result = submit_local(config.model_copy(update={"out": staging}), on_line)
            upload_folder(Path(staging), config.out)
            return JobResult(returncode=result.returncode, out=config.out, log_tail=result.log_tail)
    out = Path(config.out)
    out.mkdir(parents=True, exist_ok=True)
    config_file = write_config(config, out / CONFIG_FILE)
    command = accelerate_command(config_file, config.launch)
    log.info("launching: %s", shlex.join(command))
    returncode, tail = run_streaming(command, on_line=on_line, timeout_s=config.submit.timeout_s)
    if returncode != 0:
        raise SubmitError(shlex.join(command), returncode, tail)
    return JobResult(returncode=returncode, out=str(out), log_tail=tail)


def docker_mounts(config: TrainConfig) -> tuple[tuple[Mount, ...], dict[str, object]]:
    """What a docker job mounts (only the files it reads) and the settings that name them inside.

    Every file the objective reads (``job_inputs``: its split, the eval file, the files its
    own settings name) is mounted on its own, read-only, at
    ``/data/<name>``; a local base model folder at ``/model``; ``out`` read-write at
    ``/out``. The second value is the settings update (``config.model_copy(update=...)``)
    naming them inside. A hub id is fetched inside, which needs ``submit.network``.
    """
    from agir_retrain.tasks.models.resolve import resolve_model
    from agir_retrain.tasks.training.job_files import job_inputs, relocated

    if is_url(config.out) or is_url(config.dataset) or is_url(config.eval_dataset or ""):
        raise ConfigError("the docker backend mounts local files: give a local dataset and out")
    inputs = job_inputs(config)
    remote = [f"{file.key}={file.path!r}" for file in inputs.files if is_url(file.path)]
    if remote:
        raise ConfigError(
            f"the docker backend mounts local files: {', '.join(remote)} is a URL; give a local file"
        )
    mounts = [
        Mount(host=Path(local_path(file.path)).resolve(), container=f"/data/{file.name}")
        for file in inputs.files
    ]
    inside: dict[str, object] = relocated(config, inputs, lambda file: f"/data/{file.name}")
    inside["out"] = "/out"
    mounts.append(Mount(host=Path(config.out).resolve(), container="/out", read_only=False))
    base = resolve_model(config.base_model)
    if Path(base).is_dir():
        mounts.append(Mount(host=Path(base).resolve(), container="/model"))
        inside["base_model"] = "/model"
    elif not config.submit.network:
        raise ConfigError(
            f"base_model={config.base_model!r} is a hub id, and the docker job runs with the "
            "network off: set submit.network=true to let it download, or give a local model folder"
        )
    return tuple(mounts), inside


def submit_docker(config: TrainConfig, on_line: Callable[[str], None] | None = None) -> JobResult:
    """Train in the GPU image on the Docker engine: inputs read-only, outputs in ``out``.

    An objective whose job runs sandboxed programs itself (episodes in bwrap jails) gets
    what bwrap needs in the container (``DockerJob.nested_sandbox``); the objective refuses
    at once what cannot run there (``check_backend``).
    """
    from agir_retrain.tasks.filenames import CONFIG_FILE
    from agir_retrain.tasks.objectives import objective
    from agir_retrain.tasks.training.outputs import write_config

    chosen = objective(config.objective)
    chosen.check_backend(config, "docker")
    mounts, inside = docker_mounts(config)
    Path(config.out).mkdir(parents=True, exist_ok=True)
    write_config(config.model_copy(update=inside), Path(config.out) / CONFIG_FILE)
    settings = config.submit
    with tempfile.TemporaryDirectory(prefix="agir-build-context-") as context:
        job = DockerJob(
            context=write_build_context(Path(context)),
            dockerfile=DOCKERFILE_IN_CONTEXT,
            build_args={"BASE_IMAGE": settings.base_image} if settings.base_image else {},
            build_network=settings.build_network,
            repository=settings.image,
            command=["--config", f"/out/{CONFIG_FILE}"],
            mounts=mounts,
            env={
                "NUM_PROCESSES": str(config.launch.num_processes),
                "ACCELERATE_CONFIG": "/app/agir_retrain/container/accelerate/"
                + accelerate_config_path(config.launch).name,
                "HF_HUB_OFFLINE": "0" if settings.network else "1",
            },
            gpus=settings.gpus,
            network=settings.network,
            memory_limit=settings.memory_limit,
            pids_limit=settings.pids_limit,
            shm_size=settings.shm_size,
            user=settings.container_user,
            timeout_s=settings.timeout_s,
            nested_sandbox=chosen.nested_sandbox(config),
        )
        result = run_docker_job(job, on_line)
    return JobResult(returncode=result.returncode, out=config.out, log_tail=result.log_tail)
