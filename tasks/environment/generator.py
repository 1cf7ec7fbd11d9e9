"""Generated scenarios: a few clutter families mixed under one seed, with their strategies.

``generate_scenario(seed)`` is a function of the seed alone, so a scenario is named by it
(``gen-<seed>``, loadable wherever a built-in profile name is) and collection and
evaluation can draw from disjoint seed ranges. Each family returns the strategies that
free its junk, so a task can be a scenario plus one strategy that fits it.
"""

from __future__ import annotations

import random
import re
from dataclasses import dataclass
from functools import cache

from agir_retrain.tasks.environment.contract import Scenario
from agir_retrain.tasks.environment.families import FAMILIES, FileSet, Rule, Strategy

GENERATED_PREFIX = "gen-"
_NAME = re.compile(r"gen-(0|[1-9][0-9]{0,17})")
FAMILIES_PER_SCENARIO = (2, 3)
_DESCRIPTIONS = (
    "A shared development server whose disk is filling up.",
    "A production container that has run for months without cleanup.",
    "A build machine that is nearly out of space.",
    "A small office server with little free disk left.",
)


@dataclass(frozen=True, slots=True, kw_only=True)
class GeneratedScenario:
    """A generated scenario, the families it mixes, and one strategy per family (same order)."""

    scenario: Scenario
    families: tuple[str, ...]
    strategies: tuple[str, ...]
    rules: tuple[Rule, ...]  # what each strategy means (same order)


def is_generated_name(name: str) -> bool:
    """Whether ``name`` names a generated scenario (``gen-<seed>``)."""
    return _NAME.fullmatch(name) is not None


def generated_name(seed: int) -> str:
    """The name of the scenario generated from ``seed``."""
    if seed < 0:
        raise ValueError(f"a scenario seed is a non-negative integer, got {seed}")
    return f"{GENERATED_PREFIX}{seed}"


@cache
def generate_scenario(seed: int) -> GeneratedScenario:
    """The scenario of ``seed``: two or three families, their files, and their strategies."""
    rng = random.Random(f"agir-generated-scenario:{seed}")
    names = rng.sample(sorted(FAMILIES), rng.randint(*FAMILIES_PER_SCENARIO))
    files = FileSet()
    strategies: list[Strategy] = []
    for name in names:
        strategies += FAMILIES[name](files, rng)
    scenario = Scenario(
        name=generated_name(seed),
        seed=seed,
        files=tuple(files.files[p] for p in sorted(files.files)),
        description=rng.choice(_DESCRIPTIONS),
    )
    return GeneratedScenario(
        scenario=scenario,
        families=tuple(names),
        strategies=tuple(s.text for s in strategies),
        rules=tuple(s.rule for s in strategies),
    )


def generated_for(name: str) -> GeneratedScenario | None:
    """The generated scenario a ``gen-<seed>`` name stands for; None for any other name."""
    if not is_generated_name(name):
        return None
    return generate_scenario(int(name[len(GENERATED_PREFIX) :]))


def scenario_by_name(name: str) -> Scenario:
    """The generated scenario a ``gen-<seed>`` name stands for."""
    generated = generated_for(name)
    if generated is None:
        raise ValueError(f"{name!r} is not a generated scenario's name (gen-<seed>)")
    return generated.scenario
