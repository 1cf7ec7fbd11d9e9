"""Collect runs: play the agent's loop on many tasks at once, in waves, and write each run.

Each wave asks every unfinished run for its next completion, samples them all in one go
(batched, so the model is busy), runs the programs that came back, and advances the runs.
A run's file is written the moment it finishes, so a collection stopped halfway resumes
where it was: runs whose file exists are skipped. Sampling and episodes are passed in as
functions, so this module knows nothing of Ray or Prefect.
"""

from __future__ import annotations

import logging
import os
from collections.abc import Callable, Sequence
from dataclasses import dataclass

from agir_retrain.tasks.agent.play import AgentTask, LoopLimits, RunPlay, StrategySource
from agir_retrain.tasks.agent.prompts import PROMPT_SETS
from agir_retrain.tasks.agent.report import CollectReport, RunSummary, summarise_run
from agir_retrain.tasks.agent.runfile import RUNS_FOLDER, run_file_path, write_run
from agir_retrain.tasks.environment.carry import CarriedEpisode
from agir_retrain.tasks.environment.contract import Scenario, StoppedBy
from agir_retrain.tasks.environment.generator import generated_for
from agir_retrain.tasks.environment.scenario import load_scenario
from agir_retrain.tasks.errors import ConfigError
from agir_retrain.tasks.evaluation.sampling import SampleRequest, SamplerSpec
from agir_retrain.tasks.io import exists
from agir_retrain.tasks.settings.collect import CollectConfig

log = logging.getLogger(__name__)


@dataclass(frozen=True, slots=True, kw_only=True)
class EpisodeJob:
    """One program to run on a run's current scenario state."""

    key: str
    model: str
    completion: str
    scenario: Scenario


SampleFn = Callable[[Sequence[SampleRequest]], dict[str, str]]
"""Draws one completion per request; returns each request's text by its ``task_id`` (key)."""
EpisodeFn = Callable[[Sequence[EpisodeJob]], list[CarriedEpisode]]
"""Runs each job's episode, results in the jobs' order."""


def sampler_spec(config: CollectConfig) -> SamplerSpec:
    """What each sampling actor of a collection holds: the base, the adapter if any, how to
    sample (the sampling section)."""
    from agir_retrain.tasks.models.resolve import resolve_model

    return SamplerSpec.from_pool(
        config.sampling,
        base_model=resolve_model(config.base_model),
        base_label=config.label() if not config.adapter else "base",
        adapters=((config.label(), config.adapter),) if config.adapter else (),
        temperature=config.temperature,
        max_new_tokens=config.max_new_tokens,
        seed=config.seed,
    )


def collect_tasks(config: CollectConfig) -> list[AgentTask]:
    """The tasks of a collection: one per scenario named or generated, first ``max_tasks``."""
    if not config.scenario_refs():
        raise ConfigError(
            "no tasks: name scenarios (--scenario NAME|FILE) or draw generated ones (--generated N)"
        )
    tasks = []
    seen: set[str] = set()
    for ref in config.scenario_refs()[: config.max_tasks]:
        scenario = load_scenario(ref)
        generated = generated_for(ref)
        strategies = generated.strategies if generated else ()
        if config.strategies == "given" and not strategies:
            raise ConfigError(
                f"scenario {ref!r} has no strategies of its own: strategies=given needs "
                "generated scenarios (gen-<seed>), or use strategies=model"
            )
        task_id = scenario.name if generated or "/" not in ref else ref
        if task_id in seen:
            raise ConfigError(f"scenario {ref!r} is named twice: each task once")
        seen.add(task_id)
        tasks.append(
            AgentTask(task_id=task_id, scenario=scenario, scenario_ref=ref, strategies=strategies)
        )
    return tasks


def plan_runs(tasks: Sequence[AgentTask], config: CollectConfig) -> tuple[list[RunPlay], int]:
    """The runs still to play, and how many are already written (a resumed collection)."""
    prompts = PROMPT_SETS[config.prompts]
    limits = LoopLimits(
        max_attempts=config.max_attempts,
        max_strategy_tries=config.max_strategy_tries,
        strategies_per_run=config.strategies_per_run,
    )
    runs_dir = os.path.join(config.out, RUNS_FOLDER)
    todo, written = [], 0
    for task in tasks:
        for index in range(config.runs_per_task):
            run = RunPlay(
                task=task,
                run_index=index,
                prompts=prompts,
                source=StrategySource(config.strategies),
                limits=limits,
            )
            if exists(run_file_path(runs_dir, run)):
                written += 1
            else:
                todo.append(run)
    return todo, written


def play_runs(
    runs: Sequence[RunPlay],
    *,
    model: str,
    sample: SampleFn,
    run_episodes: EpisodeFn,
    on_finished: Callable[[RunPlay], None],
) -> None:
    """Play every run to its end, wave by wave; ``on_finished`` gets each run as it ends."""
    active = [run for run in runs if not _finish_if_done(run, on_finished)]
    wave = 0
    while active:
        wave += 1
        asked = {}
        requests = []
        for run in active:
            key, prompt = run.request()
            asked[key] = run
            requests.append(SampleRequest(task_id=key, model=model, sample=0, prompt=prompt))
        replies = sample(requests)
        for key, run in asked.items():
            run.take_reply(replies[key])
        waiting = [run for run in active if run.wants_episode]
        _run_pending(waiting, model, run_episodes)
        log.info("wave %d: %d runs asked, %d programs ran", wave, len(asked), len(waiting))
        active = [run for run in active if not _finish_if_done(run, on_finished)]


def _run_pending(runs: Sequence[RunPlay], model: str, run_episodes: EpisodeFn) -> None:
    """Run the runs' pending programs. An episode whose sandbox failed (after the episode's
    own retries: ``environment.harness_retries``) is not the program's outcome: its run is
    excluded, never written with a failure the model did not make."""
    jobs = [
        EpisodeJob(
            key=run.step_key, model=model, completion=run.pending_program or "", scenario=run.state
        )
        for run in runs
    ]
    for run, result in zip(runs, run_episodes(jobs), strict=True):
        if result.episode.stopped_by is StoppedBy.HARNESS:
            run.exclude(f"the sandbox could not run a program: {result.episode.note[:200]}")
        else:
            run.take_episode(result.episode, result.after)


def _finish_if_done(run: RunPlay, on_finished: Callable[[RunPlay], None]) -> bool:
    if run.finished:
        on_finished(run)
    return run.finished


def collect(
    config: CollectConfig,
    *,
    sample: SampleFn,
    run_episodes: EpisodeFn,
    on_run_done: Callable[[RunSummary], None] | None = None,
) -> CollectReport:
    """Play and write every run of the collection not yet written; report what was made."""
    tasks = collect_tasks(config)
    runs, already = plan_runs(tasks, config)
    label = config.label()
    summaries: list[RunSummary] = []

    def finished(run: RunPlay) -> None:
        location = None if run.excluded else write_run(config.out, run, label)
        summary = summarise_run(run, location)
        summaries.append(summary)
        if on_run_done is not None:
            on_run_done(summary)

    log.info(
        "collect: %d tasks, %d runs to play, %d already written", len(tasks), len(runs), already
    )
    play_runs(runs, model=label, sample=sample, run_episodes=run_episodes, on_finished=finished)
    return CollectReport.from_runs(
        summaries,
        tasks=len(tasks),
        already_written=already,
        model_name=label,
        prompts=config.prompts,
    )
