"""Rewards: freed share minus the damage and did-not-run penalties."""

from __future__ import annotations

import dataclasses

import pytest

from agir_retrain.tasks.environment.contract import Episode, StoppedBy
from agir_retrain.tasks.environment.reward import episode_reward, lowest_reward
from agir_retrain.tasks.settings.environment import RewardSettings

BASE = Episode(
    task_id="t",
    model="m",
    sample=0,
    code_found=True,
    exit_code=0,
    stopped_by=None,
    junk_bytes_total=100,
    junk_bytes_freed=40,
    new_bytes=0,
    protected_damaged=(),
    freed_share=0.4,
    success=True,
    seconds=0.1,
    stdout_tail="",
    stderr_tail="",
)


@pytest.mark.parametrize(
    ("changes", "reward"),
    [
        ({}, 0.4),
        ({"protected_damaged": ("/etc/x",), "success": False}, 0.4 - 2.0),
        ({"exit_code": 1, "success": False}, 0.4 - 0.25),
        ({"code_found": False, "exit_code": None, "freed_share": 0.0}, -0.25),
        ({"exit_code": 137, "protected_damaged": ("/etc/x",), "freed_share": 0.0}, -2.25),
        # the copy could not be fully measured: the lowest reward there is, whatever it shows
        ({"stopped_by": StoppedBy.UNMEASURABLE, "success": False}, -2.25),
        # the sandbox failed, not the program: no reward at all (GRPO: unscorable)
        ({"stopped_by": StoppedBy.HARNESS, "code_found": True, "exit_code": None}, None),
    ],
)
def test_episode_reward(changes, reward):
    weights = RewardSettings(damage_penalty=2.0, not_ran_penalty=0.25)
    found = episode_reward(dataclasses.replace(BASE, **changes), weights)
    assert found == (None if reward is None else pytest.approx(reward))
    assert lowest_reward(weights) == -2.25


def test_weights_are_frozen_and_default_to_the_settings():
    from pydantic import ValidationError

    from agir_retrain.tasks.settings.environment import EnvironmentSettings

    weights = RewardSettings()  # the settings type itself: no mirror to keep in step
    with pytest.raises(ValidationError, match="frozen"):
        weights.damage_penalty = 0.0  # type: ignore[misc]
    settings = EnvironmentSettings().reward
    assert (weights.damage_penalty, weights.not_ran_penalty) == (
        settings.damage_penalty,
        settings.not_ran_penalty,
    )
