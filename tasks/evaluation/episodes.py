"""Fan episodes out: one group per task (its scenario and every completion for it), run apart.

Scenarios are loaded once, here, before anything runs, so a bad scenario name or file
fails at once with its own message; groups carry the loaded scenario, so a worker
needs no path of the driver's. Groups run in local processes (the embedded default)
or as Ray tasks (``tasks/ray_pool.py``); either way the episodes come back in one
order: by model, task, sample.
"""

from __future__ import annotations

import logging
import multiprocessing
import os
import threading
from collections.abc import Callable, Iterable, Sequence
from concurrent.futures import ProcessPoolExecutor, as_completed
from dataclasses import dataclass
from pathlib import Path

from agir_retrain.tasks.environment.contract import Completion, Episode, EvalTask, Scenario
from agir_retrain.tasks.environment.episode import run_episode
from agir_retrain.tasks.environment.scenario import load_scenario
from agir_retrain.tasks.settings.environment import EnvironmentSettings

log = logging.getLogger(__name__)


@dataclass(frozen=True, slots=True, kw_only=True)
class EpisodeGroup:
    """One task's episodes to run: its scenario and its completions (any model)."""

    task_id: str
    scenario: Scenario
    completions: tuple[Completion, ...]


def resolve_scenarios(names: Iterable[str], base_dir: str | None = None) -> dict[str, Scenario]:
    """Load every scenario named (a profile, a file, or a file at a URL), once each.

    A relative path is looked up beside the tasks file (``base_dir``) first, then in
    the working folder, so a tasks file and its scenario files travel together.
    """
    loaded: dict[str, Scenario] = {}
    for ref in sorted(set(names)):
        candidate = ref
        if base_dir and not os.path.isabs(ref) and (Path(base_dir) / ref).is_file():
            candidate = str(Path(base_dir) / ref)
        loaded[ref] = load_scenario_at(candidate)
    return loaded


def load_scenario_at(name: str) -> Scenario:
    """A built-in profile or a scenario file, local or at a URL (a copy in shared storage)."""
    from agir_retrain.tasks.environment.scenario import ScenarioError, parse_scenario
    from agir_retrain.tasks.io import is_url, read_bytes
    from agir_retrain.tasks.jsonl import json_loads

    if not is_url(name):
        return load_scenario(name)
    try:
        data = json_loads()(read_bytes(name))
    except (OSError, ValueError) as exc:
        raise ScenarioError(f"{name}: not readable as JSON: {exc}") from exc
    return parse_scenario(data, name)


def episode_groups(
    tasks: Sequence[EvalTask], completions: Iterable[Completion], scenarios: dict[str, Scenario]
) -> list[EpisodeGroup]:
    """One group per task that has completions, sorted by task id."""
    by_task: dict[str, list[Completion]] = {}
    for completion in completions:
        by_task.setdefault(completion.task_id, []).append(completion)
    return [
        EpisodeGroup(
            task_id=t.task_id,
            scenario=scenarios[t.scenario],
            completions=tuple(sorted(by_task[t.task_id], key=lambda c: (c.model, c.sample))),
        )
        for t in sorted(tasks, key=lambda t: t.task_id)
        if t.task_id in by_task
    ]


def run_group(group: EpisodeGroup, settings: EnvironmentSettings) -> list[Episode]:
    """Run one task's episodes, one after another (each in a fresh copy of its scenario)."""
    return [
        run_episode(
            task_id=c.task_id,
            model=c.model,
            sample=c.sample,
            completion=c.completion,
            scenario=group.scenario,
            settings=settings,
        )
        for c in group.completions
    ]


def sort_episodes(episodes: Iterable[Episode]) -> list[Episode]:
    """Episodes in their canonical order: by model, task, sample."""
    return sorted(episodes, key=lambda e: (e.model, e.task_id, e.sample))


def run_groups_locally(
    groups: Sequence[EpisodeGroup],
    settings: EnvironmentSettings,
    workers: int,
    on_done: Callable[[int], None] | None = None,
) -> list[Episode]:
    """Run the groups on a pool of local processes (in this process when ``workers`` is 1)."""
    episodes: list[Episode] = []
    if workers <= 1 or len(groups) <= 1:
        for group in groups:
            episodes += run_group(group, settings)
            if on_done:
                on_done(len(group.completions))
        return sort_episodes(episodes)
    # Fork is cheap but unsafe once other threads exist (a progress bar, Prefect's own):
    # a child may inherit a held lock. Spawn then.
    method = "fork" if threading.active_count() == 1 and os.name == "posix" else "spawn"
    context = multiprocessing.get_context(method)
    with ProcessPoolExecutor(min(workers, len(groups)), mp_context=context) as pool:
        futures = {pool.submit(run_group, group, settings): group for group in groups}
        for future in as_completed(futures):
            episodes += future.result()
            if on_done:
                on_done(len(futures[future].completions))
    return sort_episodes(episodes)


def run_groups(
    groups: Sequence[EpisodeGroup],
    settings: EnvironmentSettings,
    *,
    use_ray: bool,
    workers: int,
    on_done: Callable[[int], None] | None = None,
) -> list[Episode]:
    """Run the groups as Ray tasks (``use_ray``) or on local processes; canonical order."""
    if use_ray:
        from agir_retrain.tasks.ray_pool import run_episode_groups_on_ray

        return run_episode_groups_on_ray(groups, settings, on_done)
    return run_groups_locally(groups, settings, workers, on_done)
