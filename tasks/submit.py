"""Submitting the training job: one interface, several backends.

``local`` runs ``accelerate launch -m tasks.training`` as a subprocess on this machine,
streams its log, and keeps its exit status; a failed job raises ``SubmitError`` with the
job's own exit status and last lines.
"""

from __future__ import annotations

import collections
import logging
import os
import subprocess
import sys
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

from tasks.errors import ConfigError, SubmitError
from tasks.settings import LaunchSettings, TrainConfig

log = logging.getLogger(__name__)

ACCELERATE_CONFIGS = Path(__file__).resolve().parent.parent / "container" / "accelerate"
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
    path = (
        ACCELERATE_CONFIGS / f"{name}.yaml"
        if "/" not in name and not name.endswith(".yaml")
        else Path(name)
    )
    if not path.is_file():
        known = sorted(p.stem for p in ACCELERATE_CONFIGS.glob("*.yaml"))
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
        "-m", "tasks.training",
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
    """Train on this machine under ``accelerate launch``; raise ``SubmitError`` if it fails."""
    from tasks.training_outputs import CONFIG_FILE, write_config

    out = Path(config.out)
    out.mkdir(parents=True, exist_ok=True)
    config_file = write_config(config, out / CONFIG_FILE)
    command = accelerate_command(config_file, config.launch)
    log.info("launching: %s", " ".join(command))
    returncode, tail = run_streaming(command, on_line=on_line)
    if returncode != 0:
        raise SubmitError(" ".join(command), returncode, tail)
    return JobResult(returncode=returncode, out=str(out), log_tail=tail)
