"""Submitting the training job: one interface, several backends.

- ``local`` runs ``accelerate launch -m agir_retrain.tasks.training`` as a subprocess on this machine,
  streams its log, and keeps its exit status.
- ``docker`` builds ``container/Dockerfile`` (reused while the build context is
  unchanged) and runs it on the Docker engine with the dataset mounted read-only
  (``tasks/docker_jobs.py``).
- ``prefect`` runs the ``train`` deployment on a GPU work pool (``flows/train.py``,
  which holds the Prefect side).

A failed job raises ``SubmitError`` with the job's own exit status and last lines.
"""

from __future__ import annotations

import collections
import logging
import os
import subprocess
import sys
import tempfile
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING

from agir_retrain.tasks.delivery.package_data import (
    DOCKERFILE_IN_CONTEXT,
    accelerate_configs_dir,
    write_build_context,
)
from agir_retrain.tasks.errors import ConfigError, SubmitError
from agir_retrain.tasks.io import copy_file_atomic, is_url, join
from agir_retrain.tasks.settings.models import LaunchSettings, TrainConfig

if TYPE_CHECKING:
    from agir_retrain.tasks.delivery.docker_jobs import Mount

log = logging.getLogger(__name__)

LOG_TAIL_LINES = 40


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


def accelerate_command(config_file: str | Path, launch: LaunchSettings) -> list[str]:
    """The command that runs the training program under ``accelerate launch``."""
    return [
        sys.executable, "-m", "accelerate.commands.launch",
        "--config_file", str(accelerate_config_path(launch)),
        "--num_processes", str(launch.num_processes),
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
    """Run a command, passing each output line to ``on_line`` (else the log); return (status, tail)."""
    tail: collections.deque[str] = collections.deque(maxlen=LOG_TAIL_LINES)
    emit = on_line or (lambda line: log.info("%s", line))
    with subprocess.Popen(
        command,
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
        errors="replace",
        env={**os.environ, **(env or {})},
    ) as process:
        if process.stdout is None:  # stdout=PIPE always gives one
            raise RuntimeError("no output pipe")
        try:
            for line in process.stdout:
                line = line.rstrip("\n")
                tail.append(line)
                emit(line)
            process.wait(timeout=timeout_s)
        except BaseException:
            process.kill()
            raise
    return process.returncode, "\n".join(tail)


def submit_local(config: TrainConfig, on_line: Callable[[str], None] | None = None) -> JobResult:
    """Train on this machine under ``accelerate launch``; raise ``SubmitError`` if it fails.

    When ``out`` is a URL (shared storage), the job writes to a local folder first and
    the finished outputs are uploaded file by file.
    """
    from agir_retrain.tasks.training.outputs import CONFIG_FILE, write_config

    if is_url(config.out):
        with tempfile.TemporaryDirectory(prefix="agir-train-") as staging:
            result = submit_local(config.model_copy(update={"out": staging}), on_line)
            upload_folder(Path(staging), config.out)
            return JobResult(returncode=result.returncode, out=config.out, log_tail=result.log_tail)
    out = Path(config.out)
    out.mkdir(parents=True, exist_ok=True)
    config_file = write_config(config, out / CONFIG_FILE)
    command = accelerate_command(config_file, config.launch)
    log.info("launching: %s", " ".join(command))
    returncode, tail = run_streaming(command, on_line=on_line, timeout_s=config.submit.timeout_s)
    if returncode != 0:
        raise SubmitError(" ".join(command), returncode, tail)
    return JobResult(returncode=returncode, out=str(out), log_tail=tail)


def upload_folder(folder: Path, target: str) -> None:
    """Copy every file under a local folder to a folder URL (each file atomically)."""
    for path in sorted(folder.rglob("*")):
        if path.is_file():
            copy_file_atomic(str(path), join(target, path.relative_to(folder).as_posix()))


def download_folder(source: str, target: Path) -> None:
    """Copy every file under a folder URL into a local folder."""
    import fsspec

    fs, root = fsspec.core.url_to_fs(source)
    for remote in sorted(fs.find(root)):
        local = target / remote[len(root.rstrip("/")) + 1 :]
        local.parent.mkdir(parents=True, exist_ok=True)
        fs.get_file(remote, str(local))


def submit_docker(config: TrainConfig, on_line: Callable[[str], None] | None = None) -> JobResult:
    """Train in the GPU image on the Docker engine: dataset and model read-only, outputs in ``out``."""
    from agir_retrain.tasks.delivery.docker_jobs import Mount
    from agir_retrain.tasks.synth.tiny_model import resolve_model
    from agir_retrain.tasks.training.outputs import CONFIG_FILE, write_config

    if is_url(config.out) or is_url(config.dataset):
        raise ConfigError("the docker backend mounts local folders: give a local dataset and out")
    dataset = Path(config.dataset).resolve()
    data_root = dataset if dataset.is_dir() else dataset.parent
    inside = {"dataset": "/data" if dataset.is_dir() else f"/data/{dataset.name}", "out": "/out"}
    mounts = [
        Mount(host=data_root, container="/data"),
        Mount(host=Path(config.out), container="/out", read_only=False),
    ]
    base = resolve_model(config.base_model)
    if Path(base).is_dir():  # a local model is mounted; a hub id is fetched inside
        mounts.append(Mount(host=Path(base), container="/model"))
        inside["base_model"] = "/model"
    if config.eval_dataset:
        raise ConfigError(
            "the docker backend takes the eval file from the dataset folder; unset eval_dataset"
        )
    Path(config.out).mkdir(parents=True, exist_ok=True)
    write_config(config.model_copy(update=inside), Path(config.out) / CONFIG_FILE)
    with tempfile.TemporaryDirectory(prefix="agir-build-context-") as context:
        return _run_in_image(config, Path(context), tuple(mounts), on_line)


def _run_in_image(
    config: TrainConfig,
    context: Path,
    mounts: tuple[Mount, ...],
    on_line: Callable[[str], None] | None,
) -> JobResult:
    from agir_retrain.tasks.delivery.docker_jobs import DockerJob, run_docker_job
    from agir_retrain.tasks.training.outputs import CONFIG_FILE

    job = DockerJob(
        context=write_build_context(context),
        dockerfile=DOCKERFILE_IN_CONTEXT,
        build_args={"BASE_IMAGE": config.submit.base_image} if config.submit.base_image else {},
        build_network=config.submit.build_network,
        repository=config.submit.image,
        command=["--config", f"/out/{CONFIG_FILE}"],
        mounts=mounts,
        env={
            "NUM_PROCESSES": str(config.launch.num_processes),
            "ACCELERATE_CONFIG": f"/app/agir_retrain/container/accelerate/{accelerate_config_path(config.launch).name}",
            "HF_HUB_OFFLINE": os.environ.get("HF_HUB_OFFLINE", "0"),
        },
        gpus=config.submit.gpus,
        timeout_s=config.submit.timeout_s,
    )
    result = run_docker_job(job, on_line)
    return JobResult(returncode=result.returncode, out=config.out, log_tail=result.log_tail)


def submit(config: TrainConfig, on_line: Callable[[str], None] | None = None) -> JobResult:
    """Run the training job on the local or docker backend (prefect: ``flows.train``)."""
    if config.submit.backend == "local":
        return submit_local(config, on_line)
    if config.submit.backend == "docker":
        return submit_docker(config, on_line)
    raise ConfigError("submit.backend=prefect is run by the train flow (flows/train.py)")
