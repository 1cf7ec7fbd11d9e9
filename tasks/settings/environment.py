"""Settings of the disk-cleanup environment: which sandbox, its limits, the episode clock.

A section, not a command: ``evaluate`` and training on executions nest it. Frozen, unknown keys rejected, and
``Field(description=...)`` is each setting's only help text, as in the other settings.
"""

from __future__ import annotations

from typing import Literal

from pydantic import Field, PositiveFloat, PositiveInt

from agir_retrain.tasks.settings.base import Section


class LimitsSettings(Section):
    """What one program may use; exceeding a limit stops it and the episode says which."""

    wall_s: PositiveFloat = Field(
        20.0, le=3600, description="Wall-clock seconds before the program is killed (timeout)."
    )
    memory_mb: PositiveInt = Field(
        512,
        ge=64,
        description="Address space of each sandboxed process, in MiB (RLIMIT_AS under bwrap, "
        "--memory under docker); exceeding it is reported as memory.",
    )
    processes: PositiveInt = Field(
        64,
        ge=4,
        description="Processes and threads the program may hold at once (a pids cgroup under "
        "bwrap, --pids-limit under docker); a fork refused at the limit is reported as processes.",
    )
    file_size_mb: PositiveInt = Field(
        64,
        description="Largest file the program may write, in MiB (RLIMIT_FSIZE); also bounds its "
        "captured stdout and stderr. Exceeding it is reported as file_size.",
    )


class RewardSettings(Section):
    """Weights of an episode's reward (training on executions): freed share minus penalties."""

    damage_penalty: float = Field(
        1.0, ge=0, description="Subtracted when any protected file was deleted or changed."
    )
    not_ran_penalty: float = Field(
        0.5,
        ge=0,
        description="Subtracted when no program was found or it did not exit with status 0.",
    )


class EnvironmentSettings(Section):
    """Where and how episodes run: the sandbox backend, its limits and the fixed clock."""

    backend: Literal["bwrap", "docker"] = Field(
        "bwrap",
        description="Sandbox: bwrap (bubblewrap, a light local jail; default) or docker (one "
        "container per episode; needs a Docker engine and the image below).",
    )
    limits: LimitsSettings = Field(
        default_factory=LimitsSettings, description="Limits on each program."
    )
    clock: float | None = Field(
        None,
        description="The 'now' file ages (age_days) count back from, as a Unix time. None: "
        "each episode's own start, so a program comparing mtimes with time.time() sees each "
        "file exactly age_days old (the sandbox's clock is the host's). A fixed value makes "
        "mtimes byte-identical across runs, but the program's time.time() still reads the host.",
    )
    interpreter: str = Field(
        "/usr/bin/python3",
        description="Python that runs the program inside the sandbox (an absolute path under "
        "/usr for bwrap, which shows only the host's /usr, read-only).",
    )
    docker_image: str = Field(
        "agir-sandbox:local",
        description="Image for the docker backend; built locally from the host's Python if "
        "missing (no registry is needed).",
    )
    work_dir: str | None = Field(
        None,
        description="Folder for episodes' scenario copies; None: the system's temporary folder. "
        "A tmpfs (/dev/shm) is fastest.",
    )
    reward: RewardSettings = Field(
        default_factory=RewardSettings, description="Reward weights (training on executions)."
    )
