"""The compare flow: one dataset, one base model, an adapter per objective, one yardstick.

    agir-retrain compare dataset --objective NAME --objective OTHER --max-steps 50 --out compare

1. train: each chosen objective in turn, through the configured backend (the ``train`` flow,
   as a subflow run named ``train-<objective>``, with its metrics and curves as artifacts);
2. evaluate: the base and every adapter on the dataset's held-out tasks and scenarios (the
   evaluate flow, as a subflow: the same tasks, samples and sandbox for every model);
3. report: ``compare.json``, ``compare.md``, ``compare.png`` (pass@1, freed share, damage
   rate with intervals, train steps, time, peak GPU memory) and a markdown artifact with
   the plot inline.
"""

from __future__ import annotations

from dataclasses import dataclass

from prefect import flow, get_run_logger
from prefect.artifacts import create_markdown_artifact

from agir_retrain.tasks.filenames import COMPARE_JSON, COMPARE_MD, COMPARE_PNG
from agir_retrain.tasks.io import join, write_bytes_atomic
from agir_retrain.tasks.rendering import markdown_image
from agir_retrain.tasks.settings.compare import CompareConfig
from agir_retrain.tasks.training.compare import (
    CompareRow,
    compare_json,
    compare_markdown,
    compare_png,
    compare_rows,
)
from agir_retrain.tasks.training.metrics import TrainingMetrics


@dataclass(frozen=True, slots=True)
class CompareResult:
    """Where the outputs are, and the rows of the table."""

    out: str
    rows: list[CompareRow]


@flow(name="compare")
def compare(config: CompareConfig) -> CompareResult:
    """Train each objective, evaluate base and adapters alike, write the table (see above)."""
    from agir_retrain.flows.evaluate import evaluate
    from agir_retrain.flows.train import train

    logger = get_run_logger()
    trained: dict[str, TrainingMetrics] = {}
    adapters: dict[str, str] = {}
    for objective in config.objectives:
        settings = config.train_config(objective)
        trained[objective] = train.with_options(flow_run_name=f"train-{objective}")(settings)
        adapters[objective] = settings.out
        logger.info("%s: %d steps", objective, trained[objective].train.global_step)
    evaluation = evaluate(config.evaluate_config(adapters))
    rows = compare_rows(evaluation.report, trained)
    markdown = compare_markdown(rows, evaluation.report.confidence)
    png = compare_png(rows)
    write_bytes_atomic(join(config.out, COMPARE_JSON), compare_json(rows))
    write_bytes_atomic(join(config.out, COMPARE_MD), markdown.encode())
    write_bytes_atomic(join(config.out, COMPARE_PNG), png)
    create_markdown_artifact(
        key="compare-objectives",
        markdown=f"{markdown}\n{markdown_image('pass@1, freed share, damage rate', png)}\n",
        description="Objectives compared on the same held-out tasks",
    )
    return CompareResult(out=config.out, rows=rows)
