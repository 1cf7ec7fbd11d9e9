"""Settings of `agir-retrain collect`: a model plays the agent's loop on scenarios, writing runs."""

from __future__ import annotations

import os
from typing import Literal

from pydantic import Field, NonNegativeInt, PositiveInt, model_validator

from agir_retrain.tasks.settings.base import Section
from agir_retrain.tasks.settings.environment import EnvironmentSettings
from agir_retrain.tasks.settings.evaluation import SamplingPoolSettings


class CollectConfig(Section):
    """Settings of `agir-retrain collect`: play AGIR's loop with a model, write v4 run files.

    Tasks are scenarios: built-in profiles, scenario files, or generated ones (``gen-<seed>``,
    also drawn by ``generated`` and ``first_seed``). Each task is played ``runs_per_task``
    times; each run is one ``full_agent_data_*.json`` under ``<out>/runs/<task>/``.
    """

    scenarios: list[str] = Field(
        default_factory=list,
        description="Scenarios to play on: built-in profile names, gen-<seed> names, or "
        "scenario files.",
    )
    generated: NonNegativeInt = Field(
        0,
        le=100_000,
        description="Generated scenarios added to the tasks: gen-<first_seed> onwards, this many.",
    )
    first_seed: NonNegativeInt = Field(
        0, description="Seed of the first generated scenario (keep evaluation's seeds apart)."
    )
    strategies: Literal["model", "given"] = Field(
        "model",
        description="model: the model lists strategies as the agent does (retried on an "
        "unparsable reply); given: a generated scenario's own strategies are written as the "
        "reply (documented as not sampled; needs gen-<seed> scenarios).",
    )
    policy: Literal["model", "reference"] = Field(
        "model",
        description="Who plays the agent: model (the base model, with the adapter if any) or "
        "reference (a scripted agent writing correct programs for generated scenarios' given "
        "strategies, a share of its first attempts with a mistake: a corpus to start from).",
    )
    strategies_per_run: PositiveInt = Field(
        3, le=10, description="Strategies pursued per run (copy agents): the first of the list."
    )
    max_attempts: PositiveInt = Field(
        3, le=10, description="Code attempts per strategy (the agent's 3)."
    )
    max_strategy_tries: PositiveInt = Field(
        3, le=10, description="Strategy replies before a run gives up (it is then written empty)."
    )
    runs_per_task: PositiveInt = Field(
        1, le=1000, description="Runs played per task, each from its own seeds."
    )
    base_model: str = Field(
        "builtin:tiny",
        description="Base model that plays the agent: a folder, hub id, GGUF file or builtin:<name>.",
    )
    adapter: str | None = Field(
        None, description="A LoRA adapter folder on the base model; None plays the bare base."
    )
    model_name: str | None = Field(
        None,
        description="The model_name written into every run (and its label); None: the "
        "adapter folder's name, else 'base'.",
    )
    prompts: Literal["agir", "compact"] = Field(
        "agir",
        description="agir: the agent's own v4 texts; compact: the same turns and tags in fewer "
        "tokens, for small models.",
    )
    temperature: float = Field(0.7, gt=0, le=100, description="Sampling temperature.")
    max_new_tokens: PositiveInt = Field(
        384, description="New tokens per reply (strategy list or code), at most."
    )
    seed: int = Field(
        0,
        description="Seed of sampling: each reply's seed mixes in its task, run, stage and "
        "attempt, so reruns and other batch sizes give the same runs.",
    )
    max_tasks: PositiveInt | None = Field(
        None, description="Keep only the first tasks (a quick check); None keeps all."
    )
    out: str = Field(
        "collect-out",
        description="Output folder: runs/<task>/full_agent_data_*.json, collect_report.json.",
    )
    workers: PositiveInt = Field(
        default_factory=lambda: os.cpu_count() or 1,
        description="Local processes running episodes.",
    )
    ray_address: str | None = Field(
        None, description="Ray cluster for the sampling actors; None: RAY_ADDRESS, else local."
    )
    ray_num_cpus: PositiveInt | None = Field(
        None, description="CPUs of a local Ray; None means every CPU."
    )
    sampling: SamplingPoolSettings = Field(
        default_factory=SamplingPoolSettings, description="The sampling actor pool."
    )
    environment: EnvironmentSettings = Field(
        default_factory=EnvironmentSettings, description="The sandbox and its limits."
    )

    @model_validator(mode="after")
    def _check(self) -> CollectConfig:
        if self.policy == "reference" and self.strategies != "given":
            raise ValueError(
                "policy=reference codes the scenarios' own strategies: set strategies=given"
            )
        return self

    def scenario_refs(self) -> list[str]:
        """Every scenario played, in order: those named, then the generated ones."""
        drawn = [f"gen-{self.first_seed + i}" for i in range(self.generated)]
        return [*self.scenarios, *drawn]

    def label(self) -> str:
        """The model's name in the runs and in sampling seeds."""
        if self.model_name:
            return self.model_name
        if self.policy == "reference":
            return "reference"
        if self.adapter:
            return os.path.basename(self.adapter.rstrip("/")) or "adapter"
        return "base"
