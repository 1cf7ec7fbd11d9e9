"""The reward of one episode, for GRPO: the share of junk freed, minus penalties."""

from __future__ import annotations

from dataclasses import dataclass

from agir_retrain.tasks.environment.contract import Episode


@dataclass(frozen=True, slots=True, kw_only=True)
class RewardWeights:
    """How much damage and a program that did not run cost, in units of freed share."""

    damage_penalty: float = 1.0
    not_ran_penalty: float = 0.5


def episode_reward(episode: Episode, weights: RewardWeights) -> float:
    """``freed_share - damage_penalty * damaged - not_ran_penalty * (no code or exit != 0)``."""
    reward = episode.freed_share
    if episode.protected_damaged:
        reward -= weights.damage_penalty
    if not episode.code_found or episode.exit_code != 0:
        reward -= weights.not_ran_penalty
    return reward
