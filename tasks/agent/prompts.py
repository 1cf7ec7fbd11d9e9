"""The messages of the agent's loop: its own v4 texts, or a compact set for small models.

Both sets keep the agent's structure and tags (system, environment blocks, strategy
request, code request, regeneration request carrying the error); the compact one says
the same in fewer tokens, without the requirements a small model trips on ("exclude all
comments"). Which set a collection used is recorded in its report.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Literal

from agir_retrain.tasks import agir_prompts
from agir_retrain.tasks.environment.contract import Scenario
from agir_retrain.tasks.environment.scenario import describe_scenario

PromptStyle = Literal["agir", "compact"]
PROMPT_STYLES: tuple[PromptStyle, ...] = ("agir", "compact")
# The machine a scenario stands for: its disk and memory (MiB), as `df -m` and `free -m` say.
DISK_MIB = 10_240.0
MEMORY_MIB = 15_953.0


@dataclass(frozen=True, slots=True, kw_only=True)
class PromptSet:
    """The texts of one style; ``{strat}``, ``{problems}``, ``{run_context}``, ``{error_context}``
    are filled in as the agent fills its templates."""

    system: str
    strategies_request: str
    strategies_regen: str
    code_request: str
    code_regen: str
    basic_env: str  # {total_memory} ... {available_storage}, MiB
    special_env: str  # {body}: the getters' output


AGIR = PromptSet(
    system=agir_prompts.SYSTEM_PROMPT,
    strategies_request=agir_prompts.STRATS_REQUEST,
    strategies_regen=agir_prompts.STRATS_REGEN,
    code_request=agir_prompts.CODE_REQUEST,
    code_regen=agir_prompts.CODE_REGEN,
    basic_env=agir_prompts.BASIC_ENV,
    special_env=agir_prompts.SPECIAL_ENV,
)

COMPACT = PromptSet(
    system="You are an agent on a Linux machine. You free disk space by writing Python programs.",
    strategies_request=agir_prompts.STRATS_REQUEST,
    strategies_regen=agir_prompts.STRATS_REGEN,
    code_request=(
        'Write a Python program that does this: "{strat}". Use only the standard library and '
        "print each path you delete. Answer with one ```python code block."
    ),
    code_regen=(
        "The program failed when run on {run_context}:\n{error_context}\n\n"
        'Fix it so that it does this: "{strat}". Answer with one ```python code block.'
    ),
    # The same blocks, without the agent's preambles (a fifth of a prompt's tokens).
    basic_env=(
        "<BasicEnvInfos>\nmemory (MiB): total {total_memory}, available {available_memory}\n"
        "disk (MiB): total {total_storage}, available {available_storage}\n</BasicEnvInfos>"
    ),
    special_env="<SpecialEnvInfos>\n{body}\n</SpecialEnvInfos>",
)

PROMPT_SETS: dict[PromptStyle, PromptSet] = {"agir": AGIR, "compact": COMPACT}


def basic_env_figures(scenario: Scenario) -> dict[str, float]:
    """The machine's memory and storage (MiB) as the agent's ``BasicEnv`` records them."""
    used = sum(f.bytes for f in scenario.files) / (1 << 20)
    return {
        "total_system_memory": MEMORY_MIB,
        "available_system_memory": round(MEMORY_MIB * 0.6, 1),
        "running_memory": round(MEMORY_MIB * 0.3, 1),
        "total_storage": DISK_MIB,
        # a nearly full disk: what the scenario holds plus a fixed share taken by the system
        "available_storage": round(DISK_MIB * 0.05 - used, 1),
    }


def basic_env_message(
    scenario: Scenario, prompts: PromptSet, figures: dict[str, float] | None = None
) -> str:
    """The ``<BasicEnvInfos>`` block of the machine a scenario stands for (or of ``figures``)."""
    figures = figures or basic_env_figures(scenario)
    return prompts.basic_env.format(
        total_memory=figures["total_system_memory"],
        available_memory=figures["available_system_memory"],
        running_memory=figures["running_memory"],
        total_storage=figures["total_storage"],
        available_storage=figures["available_storage"],
    )


def special_env_message(scenario: Scenario, prompts: PromptSet) -> str:
    """The ``<SpecialEnvInfos>`` block: the scenario's description stands for the getters' output."""
    return prompts.special_env.format(body=describe_scenario(scenario))
