"""Generated scenarios: a function of their seed, valid, and with strategies that fit them."""

from __future__ import annotations

import re

import orjson
import pytest

from agir_retrain.tasks.environment.contract import FileKind
from agir_retrain.tasks.environment.families import FAMILIES
from agir_retrain.tasks.environment.generator import (
    generate_scenario,
    generated_name,
    is_generated_name,
)
from agir_retrain.tasks.environment.scenario import (
    ScenarioError,
    load_scenario,
    parse_scenario,
    scenario_to_json,
)

SEEDS = range(300)
_FOLDER = re.compile(r"(/[A-Za-z0-9_.\-/]+)")


def test_a_scenario_is_a_function_of_its_seed_alone():
    first, again = generate_scenario(17), generate_scenario.__wrapped__(17)
    assert first == again
    assert generate_scenario(18).scenario != first.scenario
    assert first.scenario.name == generated_name(17) == "gen-17"


@pytest.mark.parametrize("seed", SEEDS[:60])
def test_every_scenario_is_a_valid_scenario_file(seed):
    generated = generate_scenario(seed)
    scenario = generated.scenario
    assert parse_scenario(orjson.loads(scenario_to_json(scenario)), "gen") == scenario
    kinds = {f.kind for f in scenario.files}
    assert kinds == {FileKind.JUNK, FileKind.PROTECTED}
    assert len(generated.strategies) == len(generated.families) in (2, 3)
    assert set(generated.families) <= set(FAMILIES)


def test_every_junk_file_lies_under_a_folder_its_strategies_name():
    """A strategy that is followed to the letter can free every byte of junk."""
    for seed in SEEDS:
        generated = generate_scenario(seed)
        folders = [m.rstrip(".,") for s in generated.strategies for m in _FOLDER.findall(s)]
        for f in generated.scenario.files:
            if f.kind is FileKind.JUNK:
                assert any(f.path.startswith(folder.rstrip("/") + "/") for folder in folders), (
                    seed,
                    f.path,
                    generated.strategies,
                )


def test_every_strategy_has_junk_to_free_and_a_rule_that_keeps_the_protected():
    for seed in SEEDS:
        generated = generate_scenario(seed)
        for rule in generated.rules:
            chosen = [f for f in generated.scenario.files if _selects(rule, f)]
            assert chosen, (seed, rule)
            assert {f.kind for f in chosen} == {FileKind.JUNK}, (seed, rule)


def _selects(rule, f) -> bool:
    name = f.path.rsplit("/", 1)[1]
    return (
        f.path.startswith(rule.folder + "/")
        and (not rule.suffixes or name.endswith(rule.suffixes))
        and name.startswith(rule.prefix)
        and (rule.older_than_days is None or f.age_days > rule.older_than_days)
    )


def test_look_alikes_share_folders_with_junk():
    """Most scenarios keep a protected file in the same folder as junk: care is needed."""
    shared = 0
    for seed in SEEDS:
        files = generate_scenario(seed).scenario.files
        junk = {f.path.rsplit("/", 1)[0] for f in files if f.kind is FileKind.JUNK}
        kept = {f.path.rsplit("/", 1)[0] for f in files if f.kind is FileKind.PROTECTED}
        shared += bool(junk & kept)
    assert shared > len(SEEDS) // 2


def test_families_vary_across_seeds():
    seen = {name for seed in SEEDS for name in generate_scenario(seed).families}
    assert seen == set(FAMILIES)


def test_generated_names_load_wherever_a_profile_name_does():
    assert load_scenario("gen-5") == generate_scenario(5).scenario
    assert is_generated_name("gen-0")
    assert not is_generated_name("gen-05")
    with pytest.raises(ScenarioError, match="gen-<seed>"):
        load_scenario("gen-x")
    with pytest.raises(ValueError, match="non-negative"):
        generated_name(-1)
