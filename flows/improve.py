"""The improve flow: generations of collect -> dataset -> train -> evaluate, on one base model.

    agir-retrain improve --base-model builtin:smollm2-135m --generations 2 --start reference

Generation 0 is the base model; generation n's adapter is trained fresh on the base, on a
window over the datasets of generations 0..n-1 (lineage recorded). Every model is judged on
the same held-out tasks (generated scenarios never collected on), each generation as a
subflow:

1. train generation n's adapter (n >= 1), unless the newest dataset has nothing for the
   objective to learn from: then the loop stops, saying so;
2. sample its completions of the held-out tasks, and evaluate it beside every earlier
   generation (the earlier completions are reused, so each model is sampled once);
3. collect runs with it on the training scenarios, and build its dataset (not for the last).

Every stage writes its last file when it is done, and a rerun starts at the first stage
that is not: a killed run resumes where it stopped. After each generation, the table and
the plot (``improve.md``, ``improve.png``, ``improve.json``, an artifact) are rewritten.
"""

from __future__ import annotations

import time
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass

from prefect import flow, get_run_logger
from prefect.artifacts import create_markdown_artifact

from agir_retrain.flows.build_dataset import build_dataset
from agir_retrain.flows.collect import collect_flow
from agir_retrain.flows.evaluate import evaluate
from agir_retrain.flows.train import train
from agir_retrain.tasks.agent.heldout import heldout_tasks
from agir_retrain.tasks.environment.contract import Completion, EvalTask
from agir_retrain.tasks.evaluation.completions import read_completions, write_completions
from agir_retrain.tasks.evaluation.eval_tasks import read_tasks, write_tasks
from agir_retrain.tasks.improve import plan
from agir_retrain.tasks.improve.assemble import (
    ImproveResult,
    assemble_report,
    objective_rows,
    publish_report,
    record_stage,
)
from agir_retrain.tasks.io import exists, join
from agir_retrain.tasks.prefect_tasks import StageProgress
from agir_retrain.tasks.rendering import markdown_image
from agir_retrain.tasks.settings.improve import ImproveConfig

MODEL_COMPLETIONS = "model_completions.jsonl"  # this generation's own held-out completions
ALL_COMPLETIONS = "completions_all.jsonl"  # every generation's so far, judged together


@dataclass(frozen=True, slots=True)
class GenerationOutcome:
    """What a generation's subflow did: evaluated, or stopped before training (and why)."""

    number: int
    stopped: str | None = None


@flow(name="improve")
def improve(config: ImproveConfig) -> ImproveResult:
    """Run the generations (see the module docstring); return the table's report."""
    logger = get_run_logger()
    tasks_file = plan.heldout_file(config)
    if not exists(tasks_file):
        write_tasks(tasks_file, heldout_tasks(config.heldout.seeds(), config.collect.prompts))
    tasks = read_tasks(tasks_file)
    logger.info("%d held-out tasks on %d scenarios", len(tasks), config.heldout.scenarios)
    stopped = None
    evaluated = -1
    for number in range(config.generations + 1):
        outcome = generation.with_options(flow_run_name=f"generation-{number}")(
            config, number, tasks
        )
        if outcome.stopped:
            stopped = outcome.stopped
            logger.warning("stopped before generation %d: %s", number, stopped)
            break
        evaluated = number
        publish(config, evaluated, stopped)
    if evaluated < 0:
        raise RuntimeError("no generation was evaluated")
    return publish(config, evaluated, stopped)


@flow(name="generation")
def generation(config: ImproveConfig, number: int, tasks: Sequence[EvalTask]) -> GenerationOutcome:
    """One generation: train its adapter, judge it, and (before the last) collect and build."""
    logger = get_run_logger()
    here = plan.paths(config, number)
    if not here.finished("train"):
        rows = objective_rows(config.train.objective, plan.paths(config, number - 1).dataset)
        if rows == 0:
            return GenerationOutcome(
                number=number,
                stopped=f"generation {number - 1}'s runs gave no rows for "
                f"{config.train.objective} to learn from (no run freed space)",
            )
        with _timed(config, number, "train"):
            train(plan.train_config(config, number))
    if not here.finished("sample"):
        with _timed(config, number, "sample"):
            sample_heldout(config, number, tasks)
    if not here.finished("evaluate"):
        with _timed(config, number, "evaluate"):
            merged = [
                c
                for n in range(number + 1)
                for c in read_completions(join(plan.paths(config, n).eval, MODEL_COMPLETIONS))
            ]
            completions = join(here.eval, ALL_COMPLETIONS)
            write_completions(completions, merged)
            evaluate(plan.evaluate_config(config, number, completions))
    if number < config.generations:
        if not here.finished("collect"):
            with _timed(config, number, "collect"):
                collect_flow(plan.collect_config(config, number))
        if not here.finished("build"):
            with _timed(config, number, "build"):
                build_dataset(plan.build_config(config, number))
    logger.info("generation %d done (%s)", number, here.root)
    return GenerationOutcome(number=number)


@contextmanager
def _timed(config: ImproveConfig, number: int, stage: str) -> Iterator[None]:
    """Record the stage's wall time once it has finished (a failed stage records none)."""
    start = time.perf_counter()
    yield
    record_stage(config, number, stage, time.perf_counter() - start)


def sample_heldout(config: ImproveConfig, number: int, tasks: Sequence[EvalTask]) -> None:
    """Sample generation ``number``'s held-out completions once (kept for later generations)."""
    from agir_retrain.tasks.evaluation.sampling import plan_sample_batches, sample_requests
    from agir_retrain.tasks.ray_pool import ray_session, sample_on_actor_pool

    here = plan.paths(config, number)
    target = join(here.eval, MODEL_COMPLETIONS)
    if exists(target):
        return
    heldout = config.heldout
    spec = plan.heldout_spec(config, number)
    requests = sample_requests(tasks, [here.label], heldout.samples)
    batches = plan_sample_batches(requests, config.sampling.batch_size)
    with (
        StageProgress(
            f"held-out {here.label}", len(requests), "improve-sampling", "samples"
        ) as bar,
        ray_session(None, None),
    ):
        completions: list[Completion] = sample_on_actor_pool(
            batches, spec, config.sampling.actors, bar.advance
        )
    write_completions(target, completions)


def publish(config: ImproveConfig, evaluated: int, stopped: str | None) -> ImproveResult:
    """Write the table and plot of the generations evaluated so far, and an artifact."""
    result = assemble_report(config, evaluated, stopped)
    markdown, png = publish_report(config, result.report)
    create_markdown_artifact(
        key="improve-generations",
        markdown=f"{markdown}\n\n{markdown_image('pass@1 and ran rate by generation', png)}\n",
        description="Generations: what each learned from, made, cost and scored",
    )
    return result
