"""The evaluate flow: does a model's code free disk space without breaking the machine?

    agir-retrain evaluate --dataset dataset --base-model builtin:tiny --adapter adapter --out eval
    agir-retrain evaluate --tasks tasks.jsonl --completions completions.jsonl --out eval

1. tasks: the held-out runs' code prompts of a built dataset (or a tasks file), each bound
   to a scenario; written to ``tasks.jsonl``;
2. completions: k samples per task from the base model and each adapter, on a Ray actor
   pool holding the model (or read from a completions file: then no model is loaded);
3. episodes: each completion's program in a fresh copy of its task's scenario, in the
   sandbox, one group per task on Ray (local processes on the embedded default);
4. report: ``episodes.parquet``, ``eval.json``, ``eval.md``, ``eval.png``, and a markdown
   artifact with the table and the plot inline.
"""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass

from prefect import flow, get_run_logger
from prefect.artifacts import create_markdown_artifact

from agir_retrain.tasks.evaluation.metrics import EvalReport, report_markdown
from agir_retrain.tasks.evaluation.stages import model_order, uses_ray
from agir_retrain.tasks.prefect_tasks import (
    make_tasks_task,
    read_completions_task,
    run_episodes_task,
    sample_completions_task,
    write_report_task,
)
from agir_retrain.tasks.rendering import markdown_image
from agir_retrain.tasks.settings.evaluation import EvaluateConfig


@dataclass(frozen=True, slots=True)
class EvaluateResult:
    """Where the outputs are, and the report."""

    out: str
    report: EvalReport


@contextmanager
def _ray(config: EvaluateConfig) -> Iterator[None]:
    """One Ray for sampling and episodes, when Ray is in use (imported only then)."""
    if not uses_ray(config):
        yield
        return
    from agir_retrain.tasks.ray_pool import ray_session

    with ray_session(config.ray_address, config.ray_num_cpus):
        yield


@flow(name="evaluate")
def evaluate(config: EvaluateConfig) -> EvaluateResult:
    """Evaluate models on sandboxed disk-cleanup tasks (see the module docstring)."""
    logger = get_run_logger()
    tasks = make_tasks_task(config)
    logger.info("%d tasks", len(tasks))
    with _ray(config):
        if config.completions is not None:
            completions = read_completions_task(config, tasks)
        else:
            completions = sample_completions_task(config, tasks)
        logger.info("%d completions", len(completions))
        episodes = run_episodes_task(config, tasks, completions)
    report, png = write_report_task(config, episodes, model_order(config, completions))
    create_markdown_artifact(
        key="evaluate-report",
        markdown=f"{report_markdown(report)}\n\n{markdown_image('pass@1 and freed share', png)}\n",
        description="Evaluation: pass@1, freed share, damage, with intervals",
    )
    return EvaluateResult(out=config.out, report=report)
