"""The reward of one episode, for training on executions: the share of junk freed, minus penalties."""

from __future__ import annotations

from agir_retrain.tasks.environment.records import Episode
from agir_retrain.tasks.settings.environment import RewardSettings


def episode_reward(episode: Episode, weights: RewardSettings) -> float:
    """``freed_share - damage_penalty * damaged - not_ran_penalty * (no code or exit != 0)``."""
    reward = episode.freed_share
    if episode.protected_damaged:
        reward -= weights.damage_penalty
    if not episode.code_found or episode.exit_code != 0:
        reward -= weights.not_ran_penalty
    return reward
