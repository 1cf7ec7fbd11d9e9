"""Held-out evaluation tasks: the first code prompt of each strategy of unseen scenarios.

A task is what a copy agent is asked first, exactly as ``collect`` asks it with given
strategies (the same messages, built by the same state machine), on a scenario whose seed
was never collected on; each strategy of a scenario is a task of its own, on the fresh
scenario.
"""

from __future__ import annotations

from collections.abc import Sequence

from agir_retrain.tasks.agent.play import AgentTask, LoopLimits, RunPlay, StrategySource
from agir_retrain.tasks.agent.prompts import PROMPT_SETS, PromptStyle
from agir_retrain.tasks.environment.contract import EvalTask
from agir_retrain.tasks.environment.generator import generate_scenario, generated_name


def heldout_tasks(seeds: Sequence[int], prompts: PromptStyle) -> list[EvalTask]:
    """One task per strategy of each generated scenario, ``gen-<seed>/s<index>``, sorted."""
    tasks = []
    for seed in seeds:
        generated = generate_scenario(seed)
        name = generated_name(seed)
        play = RunPlay(
            task=AgentTask(
                task_id=name,
                scenario=generated.scenario,
                scenario_ref=name,
                strategies=generated.strategies,
            ),
            run_index=0,
            prompts=PROMPT_SETS[prompts],
            source=StrategySource.GIVEN,
            limits=LoopLimits(),
        )
        for index, strategy in enumerate(generated.strategies):
            prompt = tuple(message for message, _ in play.code_request(strategy))
            tasks.append(EvalTask(task_id=f"{name}/s{index}", prompt=prompt, scenario=name))
    return sorted(tasks, key=lambda t: t.task_id)
