"""The build-dataset flow: run files in; runs, pairs and the training files out.

    agir-retrain dataset corpus/runs --out dataset --base-model builtin:tiny

1. plan: expand the inputs and cut them into content-addressed shards;
2. fan out one task per shard on Ray: read, validate, score, pair (reused when unchanged);
3. garble the first-try pairs' rejected sides on a Ray actor pool holding the base model;
4. assemble the tables, export the training files (preference, completion and labelled
   JSONL), and publish the report.
"""

from __future__ import annotations

import time
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass

from prefect import flow, get_run_logger, unmapped
from prefect.artifacts import (
    create_markdown_artifact,
    create_progress_artifact,
    update_progress_artifact,
)

from agir_retrain.flows.runtime import ray_task_runner
from agir_retrain.tasks.dataset.build import ShardManifest
from agir_retrain.tasks.dataset.build_report import BuildReport, build_rows, write_build_report
from agir_retrain.tasks.dataset.post_shard import build_post_shard
from agir_retrain.tasks.lineage import producer_of, write_producer
from agir_retrain.tasks.models.resolve import resolve_model
from agir_retrain.tasks.prefect_tasks import (
    assemble_dataset_task,
    build_shard_task,
    garble_task,
    plan_dataset_task,
)
from agir_retrain.tasks.rendering import markdown_table
from agir_retrain.tasks.runs.formats.registry import post_shard_formats
from agir_retrain.tasks.settings.models import BuildDatasetConfig


@dataclass(frozen=True, slots=True)
class BuildDatasetResult:
    """Where the dataset is, and its report."""

    out: str
    report: BuildReport


@contextmanager
def _timed(timing: dict[str, float], stage: str) -> Iterator[None]:
    start = time.perf_counter()
    yield
    timing[stage] = time.perf_counter() - start


@flow(name="build-dataset", task_runner=ray_task_runner(None, None))
def build_dataset(config: BuildDatasetConfig) -> BuildDatasetResult:
    """Build the training data from AGIR run files (see the module docstring)."""
    logger = get_run_logger()
    timing: dict[str, float] = {}
    work_dir = config.resolved_work_dir()
    producer = (  # read first: a wrong path fails before any shard is built
        producer_of(config.produced_by, config.producer_evaluation)
        if config.produced_by or config.producer_evaluation
        else None
    )

    with _timed(timing, "plan"):
        planned = plan_dataset_task(config.inputs, work_dir, config.shard_bytes, config.read)
    logger.info("%d shards over %d files", len(planned), sum(len(p.shard.files) for p in planned))

    with _timed(timing, "shards"):
        progress = create_progress_artifact(0.0, key="build-dataset-progress")
        futures = build_shard_task.with_options(retries=config.shard_retries).map(
            planned, read=unmapped(config.read)
        )
        manifests: list[ShardManifest] = []
        for future in futures:
            manifests.append(future.result())
            update_progress_artifact(progress, 100.0 * len(manifests) / max(1, len(planned)))
    logger.info(
        "shards: %d built, %d unchanged",
        sum(not m.cached for m in manifests),
        sum(m.cached for m in manifests),
    )
    # Runs spread over files (v5 chains): their records may sit in any shard.
    for run_format in post_shard_formats():
        step_name = run_format.post_shard.name  # type: ignore[union-attr]
        with _timed(timing, step_name):
            formed = build_post_shard(run_format, manifests, work_dir)
        if formed is not None:
            manifests.append(formed)
            logger.info(
                "%s %s: %d runs%s",
                run_format.name,
                step_name,
                formed.runs,
                " (unchanged)" if formed.cached else "",
            )

    with _timed(timing, "garble"):
        model = resolve_model(config.base_model)
        garbling = garble_task(manifests, model, config.garble)
    logger.info(
        "garbled %d requests (%d cached, %d fallbacks)",
        garbling.requests,
        garbling.cached,
        garbling.fallback,
    )

    with _timed(timing, "assemble"):
        ingest_report, export_report = assemble_dataset_task(
            manifests, config.out, work_dir, garbling.key, config.export
        )
    report = write_build_report(
        config.out,
        BuildReport(
            ingest=ingest_report,
            garbling=garbling,
            export=export_report,
            shards_total=len(manifests),
            shards_cached=sum(m.cached for m in manifests),
            timing_s=timing,
        ),
    )
    if producer is not None:
        write_producer(config.out, producer)
    create_markdown_artifact(
        key="build-dataset-report",
        markdown=markdown_table(build_rows(report), headers=("what", "count")),
        description="Dataset report",
    )
    return BuildDatasetResult(out=config.out, report=report)
