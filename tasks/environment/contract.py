"""The environment's contract types (shared/spec/environment.md), with their polars schema.

``Episode`` is one row of ``episodes.parquet`` (the contract in
``shared/spec/environment.md``): one program, run in a fresh copy of one scenario.
``EvalTask`` and ``Completion`` are one line of ``tasks.jsonl`` and ``completions.jsonl``.

``EPISODE_SCHEMA`` is built on first use (``from ... import EPISODE_SCHEMA`` works as
usual): GRPO runs episodes on GPU machines that have no polars, and only evaluation's
report writer needs the schema.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from enum import StrEnum
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    import polars as pl


# The folders a scenario may fill; each is bound writable into the sandbox, nothing else is.
SCENARIO_ROOTS = ("/var", "/tmp", "/home", "/root", "/opt", "/srv", "/etc")


class FileKind(StrEnum):
    """What a scenario file is for: junk to free, or a file that must survive unchanged."""

    JUNK = "junk"
    PROTECTED = "protected"


class StoppedBy(StrEnum):
    """Which limit stopped a program (an episode that ended by itself has none).

    The last three are not limits of the program's: ``disk`` (the episode's own filesystem
    filled, bytes or inodes), ``unmeasurable`` (the program left something the measurement
    could not see: never a success, the lowest reward) and ``harness`` (the sandbox itself
    could not start or finish: not the program's doing, retried, then excluded from scores).
    """

    TIMEOUT = "timeout"
    MEMORY = "memory"
    PROCESSES = "processes"
    FILE_SIZE = "file_size"
    DISK = "disk"
    UNMEASURABLE = "unmeasurable"
    HARNESS = "harness"


@dataclass(frozen=True, slots=True, kw_only=True)
class ScenarioFile:
    """One file of a scenario: where it lies, how big it is, what it is for, how old."""

    path: str  # absolute, under one of SCENARIO_ROOTS
    bytes: int
    kind: FileKind
    age_days: float = 0.0


@dataclass(frozen=True, slots=True, kw_only=True)
class Scenario:
    """The files of a container that matter for the task; contents derive from ``(seed, path)``."""

    name: str
    seed: int
    files: tuple[ScenarioFile, ...]
    description: str = ""  # what an agent would be told of the machine (optional)


@dataclass(frozen=True, slots=True, kw_only=True)
class Episode:
    """What one program did to one scenario (a row of ``episodes.parquet``)."""

    task_id: str
    model: str
    sample: int
    code_found: bool
    exit_code: int | None  # None: the program never ran
    stopped_by: StoppedBy | None
    junk_bytes_total: int
    junk_bytes_freed: int  # deleted junk files plus bytes cut from truncated ones
    new_bytes: int  # bytes of files the program created and left behind
    protected_damaged: tuple[str, ...] = field(default_factory=tuple)
    freed_share: float  # max(0, freed - new) / total
    success: bool  # exit 0, freed_share > 0, nothing protected damaged
    seconds: float
    stdout_tail: str  # last 2,000 characters
    stderr_tail: str
    scenario: str = ""  # the scenario's name (provenance; not in the contract's table)
    backend: str = ""  # "bwrap", "docker" or "plain" (provenance)
    note: str = ""  # why the harness failed or could not measure (empty otherwise)


def _episode_schema() -> pl.Schema:
    import polars as pl

    return pl.Schema(
        {
            "task_id": pl.String,
            "model": pl.String,
            "sample": pl.Int64,
            "code_found": pl.Boolean,
            "exit_code": pl.Int64,
            "stopped_by": pl.Enum([s.value for s in StoppedBy]),
            "junk_bytes_total": pl.Int64,
            "junk_bytes_freed": pl.Int64,
            "new_bytes": pl.Int64,
            "protected_damaged": pl.List(pl.String),
            "freed_share": pl.Float64,
            "success": pl.Boolean,
            "seconds": pl.Float64,
            "stdout_tail": pl.String,
            "stderr_tail": pl.String,
            "scenario": pl.String,
            "backend": pl.String,
            "note": pl.String,
        }
    )


def __getattr__(name: str) -> Any:
    """Build ``EPISODE_SCHEMA`` on first use (polars is imported only then)."""
    if name == "EPISODE_SCHEMA":
        schema = globals()["EPISODE_SCHEMA"] = _episode_schema()
        return schema
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")


@dataclass(frozen=True, slots=True, kw_only=True)
class EvalTask:
    """One line of ``tasks.jsonl``: a prompt bound to a scenario (a profile name or a file path)."""

    task_id: str
    prompt: tuple[dict[str, str], ...]  # chat messages {"role", "content"}
    scenario: str
    env_blocks: str = (
        "prompt"  # "prompt": as the agent saw it; "scenario": replaced by the scenario's
    )


@dataclass(frozen=True, slots=True, kw_only=True)
class Completion:
    """One line of ``completions.jsonl``: what a model wrote for a task."""

    task_id: str
    model: str
    sample: int
    completion: str
