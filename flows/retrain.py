"""The retrain flow: build the dataset, train on it, optionally evaluate, archive the adapter.

    agir-retrain retrain corpus/runs --out retrain-out --base-model builtin:tiny --backend local

Every setting has a default that works on the embedded default (a local Prefect server,
a local Ray, builtin:tiny, the local training backend). Publishes the dataset report,
the training metrics, the curves and the archive's location as artifacts.
"""

from __future__ import annotations

import tempfile
from dataclasses import dataclass
from pathlib import Path

from prefect import flow, get_run_logger
from prefect.artifacts import create_link_artifact, create_markdown_artifact

from agir_retrain.flows.build_dataset import build_dataset
from agir_retrain.flows.evaluate import EvaluateResult, evaluate
from agir_retrain.flows.runtime import ray_task_runner
from agir_retrain.flows.train import train
from agir_retrain.tasks.dataset.build_report import BuildReport
from agir_retrain.tasks.delivery.remote import local_copy
from agir_retrain.tasks.io import join
from agir_retrain.tasks.prefect_tasks import archive_adapter_task
from agir_retrain.tasks.settings.evaluation import EvaluateConfig
from agir_retrain.tasks.settings.models import RetrainConfig
from agir_retrain.tasks.training.metrics import TrainingMetrics


@dataclass(frozen=True, slots=True)
class RetrainResult:
    """Where everything is: the dataset, the adapter, the archive, and their reports."""

    dataset: str
    adapter: str
    archive: str
    report: BuildReport
    metrics: TrainingMetrics
    evaluation: EvaluateResult | None = None  # when the config's `evaluate` is on


def evaluate_adapter(config: RetrainConfig) -> EvaluateResult:
    """Evaluate the base and the new adapter on the held-out runs (the evaluate flow, nested).

    Its outputs go into the adapter's folder (``eval/``), so the archive carries them.
    """
    with tempfile.TemporaryDirectory(prefix="agir-eval-") as scratch:
        settings = config.evaluation
        if not settings.adapters:  # the adapter just trained, from wherever it was written
            adapter = local_copy(config.train.out, Path(scratch) / "adapter")
            settings = EvaluateConfig.model_validate(
                settings.model_dump() | {"adapters": [f"adapter={adapter}"]}
            )
        return evaluate(settings)


@flow(name="retrain")
def retrain(config: RetrainConfig) -> RetrainResult:
    """Build the dataset, train the adapter on it, and archive the adapter."""
    logger = get_run_logger()
    runner = ray_task_runner(config.build.ray_address, config.build.ray_num_cpus)
    dataset = build_dataset.with_options(task_runner=runner)(config.build)
    logger.info(
        "dataset at %s: %d preference rows", dataset.out, dataset.report.export.dpo_train_rows
    )
    metrics = train(config.train)
    evaluation = evaluate_adapter(config) if config.evaluate else None
    location = archive_adapter_task(
        config.train.out, config.archive_to or join(config.out, "archives"), config.build.out
    )
    logger.info("archive at %s", location)

    create_link_artifact(
        key="retrain-archive",
        link=location,
        link_text=Path(location).name,
        description="The adapter's archive",
    )
    create_markdown_artifact(
        key="retrain-summary",
        markdown=(
            f"| what | where |\n|---|---|\n| dataset | `{dataset.out}` |\n| adapter | `{config.train.out}` |\n"
            f"| archive | `{location}` |\n| preference rows (train / eval) | {dataset.report.export.dpo_train_rows} / "
            f"{dataset.report.export.dpo_eval_rows} |\n| train loss | {metrics.train.train_loss} |"
        ),
        description="What the retrain flow made",
    )
    return RetrainResult(
        dataset=dataset.out,
        adapter=config.train.out,
        archive=location,
        report=dataset.report,
        metrics=metrics,
        evaluation=evaluation,
    )
