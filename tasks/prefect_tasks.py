"""Prefect tasks: the plain functions of `tasks/`, each with its retry, timeout and naming policy.

The only `tasks/` module that imports Prefect. Retries are for transient failures
only: ``AgirError`` (bad settings, bad data) fails at once.
"""

from __future__ import annotations

from typing import Any

from prefect import Task, get_run_logger, task
from prefect.client.schemas.objects import TaskRun
from prefect.states import State

from agir_retrain.tasks.dataset.build import (
    PlannedShard,
    ShardManifest,
    assemble_dataset,
    build_shard,
    plan_dataset,
)
from agir_retrain.tasks.errors import AgirError
from agir_retrain.tasks.ray_pool import current_node_id, garble_shards
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
