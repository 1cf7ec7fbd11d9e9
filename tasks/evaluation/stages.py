"""The stages of an evaluation as plain functions: tasks, completions, episodes, report.

``flows/evaluate.py`` runs them as Prefect tasks (``tasks/prefect_tasks.py``); each can be
called from a REPL.
"""

from __future__ import annotations

import logging
import os
from collections.abc import Callable, Sequence

from agir_retrain.tasks.environment.contract import Completion, Episode, EvalTask
from agir_retrain.tasks.environment.episode import sandbox_for
from agir_retrain.tasks.environment.scenario import describe_scenario, load_scenario
from agir_retrain.tasks.errors import ConfigError
from agir_retrain.tasks.evaluation.completions import read_completions, write_completions
from agir_retrain.tasks.evaluation.episodes import (
    EpisodeGroup,
    episode_groups,
    resolve_scenarios,
    run_groups,
)
from agir_retrain.tasks.evaluation.eval_tasks import (
    read_tasks,
    tasks_from_dataset,
    write_tasks,
)
from agir_retrain.tasks.evaluation.metrics import EvalReport, compute_report
from agir_retrain.tasks.evaluation.report import episodes_frame, write_report
from agir_retrain.tasks.filenames import COMPLETIONS_FILE, TASKS_FILE
from agir_retrain.tasks.io import is_url, join
from agir_retrain.tasks.settings.evaluation import EvaluateConfig

log = logging.getLogger(__name__)


def all_tasks(config: EvaluateConfig, *, describe: bool = True) -> list[EvalTask]:
    """Every task of the source, sorted by id, before ``max_tasks`` cuts them.

    ``describe=False`` skips describing scenarios (the ids do not depend on it).
    """
    if config.dataset is not None:
        return tasks_from_dataset(
            config.dataset,
            scenarios=config.scenarios,
            env_blocks=config.env_blocks if describe else "prompt",
            include_strategy_prompts=config.include_strategy_prompts,
            describe=lambda ref: describe_scenario(load_scenario(ref)),
        )
    if config.tasks is not None:
        return read_tasks(config.tasks)
    raise ConfigError(
        "no tasks: give a built dataset (--dataset DIR) or a tasks file (--tasks FILE)"
    )


def make_tasks(config: EvaluateConfig) -> list[EvalTask]:
    """The tasks evaluated (the first ``max_tasks`` by id), written to out/tasks.jsonl."""
    tasks = all_tasks(config)[: config.max_tasks]
    write_tasks(join(config.out, TASKS_FILE), tasks)
    return tasks


def check_inputs(config: EvaluateConfig) -> None:
    """Fail now, with the input's own one-line message, rather than minutes into a flow.

    Reads the tasks (and every scenario they name) and the completions against them;
    and, where episodes run on this machine, checks that the bubblewrap sandbox runs here.
    """
    env = config.environment
    if env.backend == "bwrap" and not (config.ray_address or os.environ.get("RAY_ADDRESS")):
        sandbox_for(env)
    tasks = all_tasks(config, describe=False)
    resolve_scenarios((t.scenario for t in tasks), tasks_dir(config))
    if config.completions is not None:
        read_completions(config.completions, {t.task_id for t in tasks})


def tasks_dir(config: EvaluateConfig) -> str | None:
    """The folder of a local tasks file: relative scenario paths are looked up there."""
    if config.tasks is None or is_url(config.tasks):
        return None
    return os.path.dirname(os.path.abspath(config.tasks.removeprefix("file://")))


def given_completions(config: EvaluateConfig, tasks: Sequence[EvalTask]) -> list[Completion]:
    """Read and check the given completions file; written again, sorted, to the output."""
    assert config.completions is not None
    known = {t.task_id for t in all_tasks(config, describe=False)}
    completions = read_completions(config.completions, known)
    kept = {t.task_id for t in tasks}  # the file may cover tasks that max_tasks cut
    completions = [c for c in completions if c.task_id in kept]
    write_completions(join(config.out, COMPLETIONS_FILE), completions)
    return completions


def uses_ray(config: EvaluateConfig) -> bool:
    """Whether Ray runs this evaluation: sampling here, a cluster named, or RAY_ADDRESS set."""
    return (
        config.completions is None
        or config.ray_address is not None
        or bool(os.environ.get("RAY_ADDRESS"))
    )


def sample_completions(
    config: EvaluateConfig,
    tasks: Sequence[EvalTask],
    base: str,
    on_done: Callable[[int], None] | None = None,
) -> list[Completion]:
    """Sample k completions per task from the base (resolved: a folder or hub id) and each
    adapter on a Ray actor pool.

    Written to ``out/completions.jsonl``; ``on_done`` hears how many each batch finished.
    Ray must be up (``ray_pool.ray_session``).
    """
    from agir_retrain.tasks.evaluation.sampling import (
        SamplerSpec,
        plan_sample_batches,
        sample_requests,
    )
    from agir_retrain.tasks.ray_pool import sample_on_actor_pool

    spec = SamplerSpec.from_config(config, base)
    requests = sample_requests(tasks, config.model_labels(), config.samples)
    batches = plan_sample_batches(requests, config.sampling.batch_size)
    completions = sample_on_actor_pool(batches, spec, config.sampling.actors, on_done)
    write_completions(join(config.out, COMPLETIONS_FILE), completions)
    return completions


def run_episodes(
    config: EvaluateConfig,
    tasks: Sequence[EvalTask],
    completions: Sequence[Completion],
    on_done: Callable[[int], None] | None = None,
) -> list[Episode]:
    """Run every completion's episode, one group per task, on Ray or local processes."""
    groups = prepare_episodes(config, tasks, completions)
    return run_groups(
        groups,
        config.environment,
        use_ray=uses_ray(config),
        workers=config.workers,
        on_done=on_done,
    )


def prepare_episodes(
    config: EvaluateConfig, tasks: Sequence[EvalTask], completions: Sequence[Completion]
) -> list[EpisodeGroup]:
    """Load the tasks' scenarios (failing early on a bad one) and group completions by task."""
    scenarios = resolve_scenarios((t.scenario for t in tasks), tasks_dir(config))
    groups = episode_groups(tasks, completions, scenarios)
    log.info("%d episodes over %d tasks", len(completions), len(groups))
    return groups


def model_order(config: EvaluateConfig, completions: Sequence[Completion]) -> list[str]:
    """Models in report order: base then adapters when sampled here, else sorted labels."""
    present = sorted({c.model for c in completions})
    if config.completions is None:
        return [label for label in config.model_labels() if label in present]
    return present


def summarise(
    config: EvaluateConfig, episodes: Sequence[Episode], models: Sequence[str]
) -> tuple[EvalReport, bytes]:
    """Compute the metrics and write episodes.parquet, eval.json, eval.md, eval.png."""
    report = compute_report(
        episodes_frame(episodes),
        models=models,
        k=config.pass_k,
        resamples=config.bootstrap_resamples,
        confidence=config.confidence,
        seed=config.seed,
    )
    png = write_report(config.out, episodes, report)
    return report, png
