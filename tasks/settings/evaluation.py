"""Settings of `agir-retrain evaluate`: tasks, completions (sampled or given), episodes, report."""

from __future__ import annotations

import os
from typing import Literal

from pydantic import Field, PositiveInt, model_validator

from agir_retrain.tasks.settings.base import SAMPLING_DTYPE_HELP, SamplingDtype, Section
from agir_retrain.tasks.settings.environment import EnvironmentSettings


class SamplingPoolSettings(Section):
    """Where completions are sampled: Ray actors each holding the base model (and adapters)."""

    batch_size: PositiveInt = Field(
        8, description="Completions per generate call (one model each; sorted by prompt length)."
    )
    actors: PositiveInt = Field(2, description="Ray actors, each holding the model once.")
    cpus_per_actor: float = Field(1.0, gt=0, description="CPUs Ray reserves per actor.")
    gpus_per_actor: float = Field(
        0.0, ge=0, description="GPUs Ray reserves per actor; 0 runs on the CPU."
    )
    load_in_4bit: bool = Field(
        False, description="Load the base model in 4-bit NF4 (bitsandbytes); meant for GPUs."
    )
    dtype: SamplingDtype = Field("auto", description=SAMPLING_DTYPE_HELP)
    max_prompt_tokens: PositiveInt = Field(
        1536,
        description="Prompt tokens kept: the end of the rendered prompt, which holds the code "
        "request. Prompt plus max_new_tokens must fit the model's context.",
    )
    max_prompt_chars_per_message: PositiveInt = Field(
        8000,
        description="Characters kept of each prompt message (its start and end) before "
        "rendering: pasted container listings can be megabytes.",
    )


class EvaluateConfig(Section):
    """Settings of `agir-retrain evaluate`: does a model's code free space without damage?

    Tasks come from a built dataset's held-out runs (``dataset``) or a tasks file
    (``tasks``); completions are sampled from the base model and each adapter, or read
    from ``completions`` (then no model is loaded).
    """

    dataset: str | None = Field(
        None,
        description="A built dataset folder (runs.parquet and its preference eval split): tasks "
        "are its held-out runs' code prompts. Give this or tasks.",
    )
    tasks: str | None = Field(
        None, description="A tasks.jsonl file (the contract's format). Give this or dataset."
    )
    completions: str | None = Field(
        None,
        description="A completions.jsonl made elsewhere; None samples completions from the "
        "models here.",
    )
    base_model: str = Field(
        "builtin:tiny",
        description="Base model to sample from: a local folder, a hub id, or builtin:tiny.",
    )
    base_label: str = Field("base", min_length=1, description="Model label of the bare base.")
    adapters: list[str] = Field(
        default_factory=list,
        description="LoRA adapter folders on the base model, each sampled as its own model; "
        "label=path names one (default label: the folder's name).",
    )
    samples: PositiveInt = Field(1, le=1000, description="Completions sampled per task and model.")
    pass_k: PositiveInt | None = Field(
        None,
        description="k of pass@k; None uses the fewest samples any task has (samples when "
        "they are drawn here).",
    )
    temperature: float = Field(
        0.7, gt=0, le=100, description="Sampling temperature (no top-k or top-p cut)."
    )
    max_new_tokens: PositiveInt = Field(512, description="New tokens per completion, at most.")
    seed: int = Field(
        0,
        description="Seed of sampling (each completion's seed mixes in its task, model and "
        "sample, so reruns and other batch sizes give the same text) and of the bootstrap.",
    )
    scenarios: list[str] = Field(
        default_factory=lambda: ["debian-like"],
        min_length=1,
        description="Scenarios (built-in profile names or scenario files) dealt round-robin "
        "over the dataset's tasks, sorted by id.",
    )
    env_blocks: Literal["prompt", "scenario"] = Field(
        "prompt",
        description="prompt: keep the <BasicEnvInfos>/<SpecialEnvInfos> blocks the agent saw; "
        "scenario: replace them with the task's scenario's description (recorded per task).",
    )
    include_strategy_prompts: bool = Field(
        False, description="Also make a task of each held-out run's strategy prompt."
    )
    max_tasks: PositiveInt | None = Field(
        None, description="Keep only the first tasks by id (a quick check); None keeps all."
    )
    out: str = Field(
        "eval-out",
        description="Output folder: tasks.jsonl, completions.jsonl, episodes.parquet, eval.json, "
        "eval.md, eval.png.",
    )
    workers: PositiveInt = Field(
        default_factory=lambda: os.cpu_count() or 1,
        description="Local processes running episodes when Ray is not in use; default one per CPU.",
    )
    bootstrap_resamples: PositiveInt = Field(
        1000, description="Bootstrap resamples of tasks for each interval."
    )
    confidence: float = Field(0.95, gt=0, lt=1, description="Confidence of the intervals.")
    ray_address: str | None = Field(
        None,
        description="Ray cluster to join (ray://host:10001, or auto); None uses RAY_ADDRESS if "
        "set, else a local Ray for sampling and local processes for episodes.",
    )
    ray_num_cpus: PositiveInt | None = Field(
        None, description="CPUs of a local Ray; None means every CPU. Ignored on a cluster."
    )
    sampling: SamplingPoolSettings = Field(
        default_factory=SamplingPoolSettings, description="The sampling actor pool."
    )
    environment: EnvironmentSettings = Field(
        default_factory=EnvironmentSettings, description="The sandbox and its limits."
    )

    @model_validator(mode="after")
    def _check(self) -> EvaluateConfig:
        if self.dataset is not None and self.tasks is not None:
            raise ValueError(
                "give one source of tasks, not both: dataset (a built dataset folder) or tasks "
                "(a tasks.jsonl file)"
            )
        if self.completions is not None and self.adapters:
            raise ValueError(
                "adapters are sampled here, but completions were given: drop the adapters, or "
                "drop completions to sample"
            )
        labels = self.model_labels()
        if len(set(labels)) != len(labels):
            raise ValueError(
                f"model labels {labels} repeat: name adapters with label=path, each label once"
            )
        if self.pass_k is not None and self.completions is None and self.pass_k > self.samples:
            raise ValueError(
                f"pass_k={self.pass_k} exceeds samples={self.samples}: sample at least k per task"
            )
        return self

    def adapter_paths(self) -> list[tuple[str, str]]:
        """Each adapter's (label, folder), in the order given."""
        pairs = []
        for entry in self.adapters:
            label, sep, path = entry.partition("=")
            if not sep:
                label, path = os.path.basename(entry.rstrip("/")) or entry, entry
            pairs.append((label, path))
        return pairs

    def model_labels(self) -> list[str]:
        """The models sampled here, base first."""
        return [self.base_label, *(label for label, _path in self.adapter_paths())]
