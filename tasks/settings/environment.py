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
        description="Memory of the program, in MiB: each process's address space (RLIMIT_AS), and "
        "the episode's processes together with what they write to its filesystem (a memory "
        "cgroup of memory_mb + disk_mb under bwrap where one can be made, --memory under "
        "docker). Exceeding it is reported as memory.",
    )
    processes: PositiveInt = Field(
        64,
        ge=4,
        description="Processes and threads the episode may hold at once, all together (a pids "
        "cgroup, v1 or v2, or RLIMIT_NPROC counted in the episode's own user namespace; "
        "--pids-limit under docker); a fork refused at the limit is reported as processes.",
    )
    file_size_mb: PositiveInt = Field(
        64,
        description="Largest file the program may write, in MiB (RLIMIT_FSIZE); also bounds its "
        "captured stdout and stderr. Exceeding it is reported as file_size.",
    )
    disk_mb: PositiveInt = Field(
        256,
        le=1 << 20,
        description="Free space of the episode's own filesystem beyond the scenario's files, in "
        "MiB (a tmpfs of that size holds the scenario copy and /dev/shm). Filling it is "
        "reported as disk.",
    )
    inodes: PositiveInt = Field(
        10_000,
        le=10_000_000,
        description="Files, folders and links the program may add to the episode's filesystem "
        "(its inode bound beyond the scenario's own). Filling it is reported as disk.",
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
        description="Folder where each episode's own bounded filesystem is mounted (an empty "
        "folder per episode; the scenario copy lives in that filesystem, not in this folder); "
        "None: the system's temporary folder.",
    )
    allow_unlimited_processes: bool = Field(
        False,
        description="Run episodes even where no per-episode process limit can be set (no pids "
        "cgroup, and RLIMIT_NPROC cannot be counted per episode: a root harness without "
        "cgroups, or a kernel older than 5.14). Off: such a sandbox refuses to start.",
    )
    harness_retries: int = Field(
        2,
        ge=0,
        le=10,
        description="Times an episode whose sandbox could not start or finish (stopped_by "
        "harness: not the program's doing) is run again before it is recorded as such.",
    )
    reward: RewardSettings = Field(
        default_factory=RewardSettings, description="Reward weights (training on executions)."
    )
