"""Prefect tasks: the plain functions of `tasks/`, each with its retry, timeout and naming policy.

The rule of the house: every Prefect task is declared here, a thin ``task(...)`` around a
plain function of a stage (the logic, and its docstring, stay there); flows call these
tasks and other flows, and declare none (``tests/test_layering.py`` holds them to it).
This is also the only `tasks/` module that imports Prefect. Retries are for transient
failures only: ``AgirError`` (bad settings, bad data) fails at once. Tasks whose inputs
are thousands of rows take no cache policy (``NO_CACHE``): hashing them buys nothing.
"""

from __future__ import annotations

import threading
from collections.abc import Sequence
from types import TracebackType
from typing import Any
from uuid import UUID

from prefect import Task, get_run_logger, task
from prefect.cache_policies import NO_CACHE
from prefect.client.schemas.objects import TaskRun
from prefect.states import State
from rich.console import Console
from rich.progress import (
    BarColumn,
    MofNCompleteColumn,
    Progress,
    TaskProgressColumn,
    TextColumn,
    TimeElapsedColumn,
    TimeRemainingColumn,
)

from agir_retrain.tasks.dataset.build import (
    PlannedShard,
    ShardManifest,
    assemble_dataset,
    build_shard,
    plan_dataset,
)
from agir_retrain.tasks.delivery.archive import archive_verified
from agir_retrain.tasks.environment.contract import Completion, Episode, EvalTask
from agir_retrain.tasks.errors import AgirError
from agir_retrain.tasks.evaluation.stages import (
    given_completions,
    make_tasks,
    run_episodes,
    sample_completions,
    summarise,
)
from agir_retrain.tasks.ray_pool import current_node_id, garble_shards
from agir_retrain.tasks.settings.evaluation import EvaluateConfig
from agir_retrain.tasks.settings.models import ReadSettings


def transient(_task: Task[Any, Any], _run: TaskRun, state: State[Any]) -> bool:
    """Retry unless the failure is one of ours (those are permanent)."""
    try:
        state.result(raise_on_failure=True)
    except AgirError:
        return False
    except BaseException:  # noqa: BLE001 - any other failure (I/O, worker lost) is worth a retry
        return True
    return True


plan_dataset_task = task(name="plan-shards", timeout_seconds=1800)(plan_dataset)


def build_shard_where_logged(planned: PlannedShard, read: ReadSettings) -> ShardManifest:
    """Build one shard (``build_shard``) and log which Ray node it ran on."""
    manifest = build_shard(planned, read)
    get_run_logger().info(
        "shard %05d %s on Ray node %s",
        planned.shard.index,
        "reused" if manifest.cached else "built",
        current_node_id() or "none (not on Ray)",
    )
    return manifest


build_shard_task = task(
    name="build-shard",
    task_run_name="shard-{planned.shard.index:05d}",
    retries=2,
    retry_delay_seconds=[2, 10],
    retry_condition_fn=transient,
    timeout_seconds=3600,
)(build_shard_where_logged)

garble_task = task(
    name="garble",
    retries=1,
    retry_condition_fn=transient,
    timeout_seconds=6 * 3600,
)(garble_shards)

assemble_dataset_task = task(name="assemble-dataset", timeout_seconds=3600)(assemble_dataset)

# The evaluate flow's stages.
make_tasks_task = task(name="make-tasks", cache_policy=NO_CACHE, timeout_seconds=3600)(make_tasks)
read_completions_task = task(name="read-completions", cache_policy=NO_CACHE, timeout_seconds=3600)(
    given_completions
)


def sample_with_progress(config: EvaluateConfig, tasks: Sequence[EvalTask]) -> list[Completion]:
    """``sample_completions`` of the resolved base model, counted on a bar and an artifact."""
    from agir_retrain.tasks.models.resolve import resolve_model

    total = len(tasks) * len(config.model_labels()) * config.samples
    with StageProgress("sampling", total, "evaluate-sampling", "completions") as bar:
        return sample_completions(config, tasks, resolve_model(config.base_model), bar.advance)


sample_completions_task = task(
    name="sample-completions",
    retries=1,
    retry_condition_fn=transient,
    cache_policy=NO_CACHE,
    timeout_seconds=24 * 3600,
)(sample_with_progress)


def episodes_with_progress(
    config: EvaluateConfig, tasks: Sequence[EvalTask], completions: Sequence[Completion]
) -> list[Episode]:
    """``run_episodes``, counted on a bar and a progress artifact."""
    with StageProgress("episodes", len(completions), "evaluate-episodes", "episodes") as bar:
        return run_episodes(config, tasks, completions, bar.advance)


run_episodes_task = task(name="run-episodes", cache_policy=NO_CACHE, timeout_seconds=24 * 3600)(
    episodes_with_progress
)
write_report_task = task(name="write-report", cache_policy=NO_CACHE, timeout_seconds=3600)(
    summarise
)


archive_adapter_task = task(
    name="archive-adapter",
    retries=2,
    retry_delay_seconds=[2, 10],
    retry_condition_fn=transient,  # a manifest mismatch is permanent; storage hiccups are not
    timeout_seconds=3600,
)(archive_verified)


_stderr = Console(stderr=True)  # progress bars, below the log lines


class _Rate(TextColumn):
    """Items per second."""

    def __init__(self, unit: str) -> None:
        super().__init__("")
        self.unit = unit

    def render(self, task):  # type: ignore[override]
        from rich.text import Text

        speed = task.finished_speed or task.speed
        return Text(f"{speed:.1f} {self.unit}/s" if speed else f"- {self.unit}/s")


class StageProgress:
    """Count a stage's finished items on a terminal bar and a Prefect progress artifact.

    ``advance`` may be called from any thread. The artifact is made only inside a flow
    or task run (``key`` names it: lowercase letters, digits and dashes).
    """

    def __init__(self, description: str, total: int, key: str, unit: str = "items") -> None:
        self.description = description
        self.total = max(0, total)
        self.key = key
        self.done = 0
        self._lock = threading.Lock()
        self._bar = Progress(
            TextColumn("[progress.description]{task.description}"),
            BarColumn(),
            MofNCompleteColumn(),
            TaskProgressColumn(),
            _Rate(unit),
            TimeElapsedColumn(),
            TimeRemainingColumn(),
            console=_stderr,
            transient=True,
        )
        self._task = self._bar.add_task(description, total=self.total)
        self._artifact: UUID | None = None
        self._reported = -1.0

    def __enter__(self) -> StageProgress:
        self._artifact = _create_artifact(self.key, self.description)
        self._bar.start()
        return self

    def advance(self, count: int = 1) -> None:
        """Record ``count`` more items done."""
        with self._lock:
            self.done += count
            self._bar.advance(self._task, count)
            percent = 100.0 * self.done / self.total if self.total else 100.0
            # Whole percents only: a server round trip per episode would cost more than it shows.
            if self._artifact is not None and int(percent) > int(self._reported):
                self._reported = percent
                _update_artifact(self._artifact, percent)

    def __exit__(
        self,
        kind: type[BaseException] | None,
        error: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self._bar.stop()
        if self._artifact is not None and kind is None:
            _update_artifact(self._artifact, 100.0)


def _in_run() -> bool:
    from prefect.context import FlowRunContext, TaskRunContext

    return FlowRunContext.get() is not None or TaskRunContext.get() is not None


def _create_artifact(key: str, description: str) -> UUID | None:
    if not _in_run():
        return None
    from prefect.artifacts import create_progress_artifact

    return create_progress_artifact(0.0, key=key, description=description)


def _update_artifact(artifact: UUID, percent: float) -> None:
    from prefect.artifacts import update_progress_artifact

    update_progress_artifact(artifact, min(100.0, percent))
