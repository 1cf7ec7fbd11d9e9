"""Episodes in sequence: a program runs on the scenario copy that earlier programs left behind.

The agent's container is not reset between its code attempts, so ``collect`` needs each
attempt to start from the state the previous ones left. That state is carried as a
scenario of its own (``scenario_after``): the junk still there (at its new size when it
was truncated) and the protected files still intact. A scenario is data, so the state
an attempt started from can be written as a scenario file and the same program judged
again by ``evaluate --completions``, with the same result.

What the state leaves out, on purpose: files a program created (they are counted once,
as ``new_bytes`` of the attempt that made them) and protected files it damaged (counted
once, as that attempt's damage); the next attempt starts without them. An episode that
could not be measured, or whose sandbox failed, leaves the state as it was.
"""

from __future__ import annotations

from dataclasses import dataclass, replace

from agir_retrain.tasks.environment.contract import Episode, FileKind, Scenario
from agir_retrain.tasks.environment.episode import run_measured_episode
from agir_retrain.tasks.environment.measure import Measurement
from agir_retrain.tasks.settings.environment import EnvironmentSettings


@dataclass(frozen=True, slots=True, kw_only=True)
class CarriedEpisode:
    """One program's episode, and the scenario state it left for the next program."""

    episode: Episode
    after: Scenario


def scenario_after(scenario: Scenario, found: Measurement) -> Scenario:
    """The scenario as the measured copy holds it (see the module docstring)."""
    if found.unmeasurable:
        return scenario
    left = dict(found.junk_left)
    damaged = set(found.protected_damaged)
    kept = []
    for f in scenario.files:
        if f.kind is FileKind.JUNK:
            if f.path in left:
                # A truncated file keeps its first bytes: its contents at the new size.
                kept.append(replace(f, bytes=min(f.bytes, left[f.path])))
        elif f.path not in damaged:
            kept.append(f)
    return replace(scenario, files=tuple(kept))


def run_carried_episode(
    *,
    task_id: str,
    model: str,
    sample: int,
    completion: str,
    scenario: Scenario,
    settings: EnvironmentSettings,
) -> CarriedEpisode:
    """Run one completion's program on ``scenario``: its episode (``run_episode``'s, exactly)
    and the state after."""
    episode, found = run_measured_episode(
        task_id=task_id,
        model=model,
        sample=sample,
        completion=completion,
        scenario=scenario,
        settings=settings,
    )
    after = scenario if found is None else scenario_after(scenario, found)
    return CarriedEpisode(episode=episode, after=after)
