"""Settings of `agir-retrain improve`: generations of collect -> dataset -> train -> evaluate."""

from __future__ import annotations

from typing import Literal

from pydantic import Field, NonNegativeInt, PositiveInt, model_validator

from agir_retrain.tasks.settings.base import Section
from agir_retrain.tasks.settings.build import BuildDatasetConfig
from agir_retrain.tasks.settings.collect import CollectConfig
from agir_retrain.tasks.settings.environment import EnvironmentSettings
from agir_retrain.tasks.settings.evaluation import SamplingPoolSettings
from agir_retrain.tasks.settings.train import TrainConfig


class HeldoutSettings(Section):
    """The held-out tasks every generation is judged on: generated scenarios never collected on."""

    first_seed: NonNegativeInt = Field(
        100_000, description="Seed of the first held-out scenario (gen-<seed>)."
    )
    scenarios: PositiveInt = Field(
        20,
        le=10_000,
        description="Held-out scenarios; each of their strategies is a task (2 or 3 each).",
    )
    samples: PositiveInt = Field(4, le=100, description="Completions per task and model.")
    temperature: float = Field(0.7, gt=0, le=100, description="Sampling temperature.")
    max_new_tokens: PositiveInt = Field(384, description="New tokens per completion, at most.")
    seed: int = Field(0, description="Seed of sampling and of the bootstrap.")
    bootstrap_resamples: PositiveInt = Field(1000, description="Bootstrap resamples of tasks.")
    confidence: float = Field(0.95, gt=0, lt=1, description="Confidence of the intervals.")

    def seeds(self) -> range:
        """The held-out scenarios' seeds."""
        return range(self.first_seed, self.first_seed + self.scenarios)


class ImproveConfig(Section):
    """Settings of `agir-retrain improve`: the agent improves over generations.

    Generation 0 is the base model. Each generation's model collects runs on the training
    scenarios (``collect``), a dataset is built from them (``build``), the next generation's
    adapter is trained, fresh on the base, on a window over every generation's dataset so
    far (``train``), and each model is judged on the held-out tasks (``heldout``). Every
    section's inputs, outputs and model are filled in per generation; set the rest there.
    """

    out: str = Field("improve-out", description="Output folder: gen-<n>/... and improve.*.")
    base_model: str = Field(
        "builtin:tiny",
        description="The base model: a folder, hub id, GGUF file or builtin:<name>.",
    )
    generations: PositiveInt = Field(
        2, le=20, description="Adapters trained after the base (generation 0)."
    )
    start: Literal["base", "reference"] = Field(
        "base",
        description="Who collects generation 0's runs: the base model, or the reference agent "
        "(a scripted agent writing correct programs, for a base too weak to succeed alone).",
    )
    start_runs: list[str] = Field(
        default_factory=list,
        description="More run files or folders (a corpus an agent made) added to generation "
        "0's dataset.",
    )
    scenarios: PositiveInt = Field(
        16,
        le=100_000,
        description="Training scenarios collected on: gen-<first_seed> onwards, this many "
        "(each played with its own strategies, as the held-out ones are).",
    )
    first_seed: NonNegativeInt = Field(0, description="Seed of the first training scenario.")
    window: str = Field(
        "all", description="Which generations' datasets each adapter trains on: all, last:K."
    )
    collect: CollectConfig = Field(
        default_factory=CollectConfig,
        description="Collecting on the training scenarios (scenarios, strategies, model and "
        "out filled per generation).",
    )
    build: BuildDatasetConfig = Field(
        default_factory=BuildDatasetConfig,
        description="Building each generation's dataset (inputs, out, producer filled).",
    )
    train: TrainConfig = Field(
        default_factory=TrainConfig,
        description="Training each adapter (dataset window, out, base filled); its objective.",
    )
    heldout: HeldoutSettings = Field(
        default_factory=HeldoutSettings, description="The held-out tasks."
    )
    sampling: SamplingPoolSettings = Field(
        default_factory=SamplingPoolSettings, description="Sampling the held-out completions."
    )
    environment: EnvironmentSettings = Field(
        default_factory=EnvironmentSettings,
        description="The sandbox of collecting and evaluating (collect.environment follows it).",
    )

    @model_validator(mode="after")
    def _check(self) -> ImproveConfig:
        collected = range(self.first_seed, self.first_seed + self.scenarios)
        judged = self.heldout.seeds()
        if collected.start < judged.stop and judged.start < collected.stop:
            raise ValueError(
                f"held-out seeds {judged.start}..{judged.stop - 1} overlap the training seeds "
                f"{collected.start}..{collected.stop - 1}: keep heldout.first_seed clear of "
                "first_seed .. first_seed + scenarios"
            )
        if self.collect.scenarios or self.collect.generated:
            raise ValueError(
                "improve draws its training scenarios itself: set scenarios and first_seed, "
                "not collect.scenarios or collect.generated"
            )
        if not self.window.startswith(("all", "last:")):
            raise ValueError(f"window={self.window!r}: use all or last:K")
        return self
