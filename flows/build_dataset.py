"""The build-dataset flow: run files in; runs, pairs, DPO and KTO files out.

    agir-retrain dataset corpus/runs --out dataset --base-model builtin:tiny

1. plan: expand the inputs and cut them into content-addressed shards;
2. fan out one task per shard on Ray: read, validate, score, pair (reused when unchanged);
3. garble the first-try pairs' rejected sides on a Ray actor pool holding the base model;
4. assemble the tables, export DPO and KTO JSONL, and publish the report.
"""

from __future__ import annotations

import time
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from typing import Any

from prefect import flow, get_run_logger, unmapped
from prefect.artifacts import (
    create_markdown_artifact,
    create_progress_artifact,
    update_progress_artifact,
)

from agir_retrain.flows.runtime import ray_task_runner
from agir_retrain.tasks.dataset.build import ShardManifest, write_build_report
from agir_retrain.tasks.prefect_tasks import (
    assemble_dataset_task,
    build_shard_task,
    garble_task,
    plan_dataset_task,
)
from agir_retrain.tasks.settings.models import BuildDatasetConfig
from agir_retrain.tasks.synth.tiny_model import resolve_model


@dataclass(frozen=True, slots=True)
class BuildDatasetResult:
    """Where the dataset is, and its report."""

    out: str
    report: dict[str, Any]


@contextmanager
def _timed(timing: dict[str, float], stage: str) -> Iterator[None]:
    start = time.perf_counter()
    yield
    timing[stage] = time.perf_counter() - start


@flow(name="build-dataset", task_runner=ray_task_runner(None, None))
def build_dataset(config: BuildDatasetConfig) -> BuildDatasetResult:
    """Build DPO and KTO data from AGIR run files (see the module docstring)."""
    logger = get_run_logger()
    timing: dict[str, float] = {}
    work_dir = config.resolved_work_dir()

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
        config.out, ingest_report, export_report, garbling, manifests, timing
    )
    create_markdown_artifact(
        key="build-dataset-report", markdown=report_markdown(report), description="Dataset report"
    )
    return BuildDatasetResult(out=config.out, report=report)


def report_markdown(report: dict[str, Any]) -> str:
    """The report as markdown tables: rows in and out, quarantine by reason, pairs by class."""
    lines = ["| what | count |", "|---|---|"]
    lines += [
        f"| files in / read / quarantined | {report['files_in']} / {report['files_read']} / {report['files_quarantined']} |",
        f"| runs in / quarantined | {report['runs_in']} / {report['runs_quarantined']} |",
    ]
    lines += [f"| runs {name} | {count} |" for name, count in report["runs_by_class"].items()]
    lines += [
        f"| pairs {rule} | {count} |" for rule, count in report["export"]["pairs_by_rule"].items()
    ]
    export, garbling = report["export"], report["garbling"]
    lines += [
        f"| DPO rows train / eval | {export['dpo_train_rows']} / {export['dpo_eval_rows']} |",
        f"| duplicate rows dropped | {export['duplicates_dropped']} |",
        f"| KTO rows (desirable) | {export['kto_rows']} ({export['kto_desirable']}) |",
        f"| garbled: model / fallback / redraws | {garbling['model']} / {garbling['fallback']} / {garbling['redraws']} |",
    ]
    lines += [
        f"| quarantined: {reason} | {count} |"
        for reason, count in report["quarantine_reasons"].items()
    ]
    lines += [f"| time: {stage} (s) | {seconds} |" for stage, seconds in report["timing_s"].items()]
    return "\n".join(lines)
