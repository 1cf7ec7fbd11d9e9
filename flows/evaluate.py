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

import os
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass

from prefect import flow, get_run_logger, task
from prefect.artifacts import create_markdown_artifact
from prefect.cache_policies import NO_CACHE

from agir_retrain.flows.progress import StageProgress
from agir_retrain.tasks.environment.records import Completion, Episode, EvalTask
from agir_retrain.tasks.evaluation.completions import write_completions
from agir_retrain.tasks.evaluation.episodes import run_groups_locally
from agir_retrain.tasks.evaluation.metrics import EvalReport, report_markdown
from agir_retrain.tasks.evaluation.stages import (
    given_completions,
    make_tasks,
    model_order,
    prepare_episodes,
    summarise,
)
from agir_retrain.tasks.filenames import COMPLETIONS_FILE
from agir_retrain.tasks.io import join
from agir_retrain.tasks.prefect_tasks import transient
from agir_retrain.tasks.rendering import markdown_image
from agir_retrain.tasks.settings.evaluation import EvaluateConfig


@dataclass(frozen=True, slots=True)
class EvaluateResult:
    """Where the outputs are, and the report."""

    out: str
    report: EvalReport


def uses_ray(config: EvaluateConfig) -> bool:
    """Whether Ray runs this evaluation: sampling here, a cluster named, or RAY_ADDRESS set."""
    return (
        config.completions is None
        or config.ray_address is not None
        or bool(os.environ.get("RAY_ADDRESS"))
    )


@contextmanager
def _ray(config: EvaluateConfig) -> Iterator[None]:
    """One Ray for sampling and episodes, when Ray is in use (imported only then)."""
    if not uses_ray(config):
        yield
        return
    from agir_retrain.tasks.ray_pool import ray_session

    with ray_session(config.ray_address, config.ray_num_cpus):
        yield


# No cache policy: inputs are thousands of completions, and hashing them buys nothing here.
make_tasks_task = task(name="make-tasks", cache_policy=NO_CACHE, timeout_seconds=3600)(make_tasks)
read_completions_task = task(name="read-completions", cache_policy=NO_CACHE, timeout_seconds=3600)(
    given_completions
)


@task(
    name="sample-completions",
    retries=1,
    retry_condition_fn=transient,
    cache_policy=NO_CACHE,
    timeout_seconds=24 * 3600,
)
def sample_completions(config: EvaluateConfig, tasks: Sequence[EvalTask]) -> list[Completion]:
    """Sample k completions per task from the base and each adapter on the Ray actor pool."""
    from agir_retrain.tasks.evaluation.sampling import (
        SamplerSpec,
        plan_sample_batches,
        sample_requests,
    )
    from agir_retrain.tasks.models.resolve import resolve_model
    from agir_retrain.tasks.ray_pool import sample_on_actor_pool

    spec = SamplerSpec.from_config(config, resolve_model(config.base_model))
    requests = sample_requests(tasks, config.model_labels(), config.samples)
    batches = plan_sample_batches(requests, config.sampling.batch_size)
    with StageProgress("sampling", len(requests), "evaluate-sampling", "completions") as bar:
        completions = sample_on_actor_pool(batches, spec, config.sampling.actors, bar.advance)
    write_completions(join(config.out, COMPLETIONS_FILE), completions)
    return completions


@task(name="run-episodes", cache_policy=NO_CACHE, timeout_seconds=24 * 3600)
def run_episodes(
    config: EvaluateConfig, tasks: Sequence[EvalTask], completions: Sequence[Completion]
) -> list[Episode]:
    """Run every completion's episode, one group per task, on Ray or local processes."""
    groups = prepare_episodes(config, tasks, completions)
    with StageProgress("episodes", len(completions), "evaluate-episodes", "episodes") as bar:
        if uses_ray(config):
            from agir_retrain.tasks.ray_pool import run_episode_groups_on_ray

            return run_episode_groups_on_ray(groups, config.environment, bar.advance)
        return run_groups_locally(groups, config.environment, config.workers, bar.advance)


write_report_task = task(name="write-report", cache_policy=NO_CACHE, timeout_seconds=3600)(
    summarise
)


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
            completions = sample_completions(config, tasks)
        logger.info("%d completions", len(completions))
        episodes = run_episodes(config, tasks, completions)
    report, png = write_report_task(config, episodes, model_order(config, completions))
    create_markdown_artifact(
        key="evaluate-report",
        markdown=f"{report_markdown(report)}\n\n{markdown_image('pass@1 and freed share', png)}\n",
        description="Evaluation: pass@1, freed share, damage, with intervals",
    )
    return EvaluateResult(out=config.out, report=report)
