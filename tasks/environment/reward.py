"""The reward of one episode, for training on executions: the share of junk freed, minus penalties."""

from __future__ import annotations

from agir_retrain.tasks.environment.contract import Episode, StoppedBy
from agir_retrain.tasks.settings.environment import RewardSettings


def lowest_reward(weights: RewardSettings) -> float:
    """The least any episode can earn: nothing freed, damage, and a program that did not run."""
    return -weights.damage_penalty - weights.not_ran_penalty


def episode_reward(episode: Episode, weights: RewardSettings) -> float | None:
    """``freed_share - damage_penalty * damaged - not_ran_penalty * (no code or exit != 0)``.

    An unmeasurable episode earns the lowest reward; a harness failure (the sandbox could
    not start or finish) earns none: None, which TRL's GRPO treats as unscorable (no
    advantage, left out of the group's baseline), so it is never scored as the program's.
    """
    if episode.stopped_by is StoppedBy.HARNESS:
        return None
    if episode.stopped_by is StoppedBy.UNMEASURABLE:
        return lowest_reward(weights)
    reward = episode.freed_share
    if episode.protected_damaged:
        reward -= weights.damage_penalty
    if not episode.code_found or episode.exit_code != 0:
        reward -= weights.not_ran_penalty
    return reward
