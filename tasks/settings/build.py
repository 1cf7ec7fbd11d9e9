"""Settings of reading, ingest and the build-dataset flow (garbling, export)."""

from __future__ import annotations

import os

from pydantic import Field, PositiveInt, model_validator

from agir_retrain.tasks.io import default_cache_dir
from agir_retrain.tasks.settings.base import SAMPLING_DTYPE_HELP, SamplingDtype, Section


class ReadSettings(Section):
    """Bounds on what the reader accepts; anything over them is quarantined with a reason."""

    max_file_bytes: PositiveInt = Field(
        512 << 20,
        description="Largest run file read, in bytes; a larger file is quarantined (file_too_large).",
    )
    max_message_chars: PositiveInt = Field(
        4 << 20,
        description="Longest chat message kept, in characters; a run holding a longer one is "
        "quarantined (message_too_large).",
    )


class IngestConfig(Section):
    """Settings of `agir-retrain ingest`: read, score and pair run files."""

    inputs: list[str] = Field(
        default_factory=list,
        description="Run files, folders (searched recursively for *.json), globs, or fsspec "
        "URLs (file://, s3://, ...).",
    )
    out: str = Field("out", description="Output folder or fsspec URL; created if missing.")
    workers: PositiveInt = Field(
        default_factory=lambda: os.cpu_count() or 1,
        description="Processes reading shards in parallel; default one per CPU.",
    )
    shard_bytes: PositiveInt = Field(
        32 << 20,
        description="Target input bytes per shard (the unit of parallel work and of caching).",
    )
    read: ReadSettings = Field(default_factory=ReadSettings, description="Reader limits.")


class GarbleSettings(Section):
    """How rejected sides are sampled for first-try runs (seed table 2)."""

    temperature: float = Field(
        2.0, gt=0, le=100, description="Sampling temperature; no top-k or top-p cut is applied."
    )
    max_new_tokens: PositiveInt = Field(
        256,
        description="Cap on new tokens; each sample gets about as many as its chosen text has.",
    )
    min_new_tokens: PositiveInt = Field(
        8, description="Floor on new tokens, for very short chosen texts."
    )
    max_prompt_tokens: PositiveInt = Field(
        512,
        description="Prompt tokens kept: the end of the rendered prompt, which holds the "
        "request (and the strategy it quotes). At temperature 2 a sample barely depends on "
        "distant context, and prefill cost grows with the square of this.",
    )
    max_prompt_chars_per_message: PositiveInt = Field(
        4000,
        description="Characters kept of each prompt message (its start and end) before "
        "rendering: container listings can be megabytes.",
    )
    max_redraws: int = Field(
        3,
        ge=0,
        le=20,
        description="Extra draws, each with the next seed, when a sample is empty or equals "
        "the chosen text; after them a model-free corruption of the chosen text is used.",
    )
    seed: int = Field(
        0, description="Base seed; each request's seed mixes in its run id and prompt kind."
    )
    batch_size: PositiveInt = Field(
        16, description="Requests per generate call (sorted by length, left-padded)."
    )
    actors: PositiveInt = Field(2, description="Ray actors, each holding the base model once.")
    cpus_per_actor: float = Field(1.0, gt=0, description="CPUs Ray reserves per actor.")
    gpus_per_actor: float = Field(
        0.0, ge=0, description="GPUs Ray reserves per actor; 0 runs on the CPU."
    )
    load_in_4bit: bool = Field(
        False, description="Load the base model in 4-bit NF4 (bitsandbytes); meant for GPUs."
    )
    dtype: SamplingDtype = Field("auto", description=SAMPLING_DTYPE_HELP)

    def sampling_key(self) -> dict[str, object]:
        """The settings that change what is sampled (batching and placement do not)."""
        return self.model_dump(exclude={"batch_size", "actors", "cpus_per_actor", "gpus_per_actor"})


class ExportSettings(Section):
    """What goes into the DPO and KTO files, and how the DPO rows are split."""

    eval_share: float = Field(
        0.05,
        ge=0,
        lt=1,
        description="Share of runs whose pairs go to dpo/eval.jsonl (the split is by run, never by row).",
    )
    split_seed: int = Field(0, description="Seed of the train/eval split.")
    sft: bool = Field(
        True,
        description="Also write sft/train.jsonl and sft/eval.jsonl: the records that freed "
        "space (code prompt -> code, strategy prompt -> strategy), split by run.",
    )
    kto: bool = Field(
        True,
        description="Also write kto/train.jsonl: every scored record of a consistent run as "
        "(prompt, completion, label = score > 0), TRL's unpaired format.",
    )
    borrowed_chosen: bool = Field(
        False,
        description="Pair never_freed runs with the best successful code of another run "
        "that pursued the exact same strategy (rule borrowed_chosen).",
    )
    cross_run_pairs: bool = Field(
        False,
        description="Pair strategies across runs that share a strategy prompt once env "
        "figures are normalised: one that freed space over one that did not (rule cross_run_strat).",
    )


class BuildDatasetConfig(Section):
    """Settings of the build-dataset flow: runs in, DPO and KTO files out."""

    inputs: list[str] = Field(
        default_factory=list,
        description="Run files, folders (searched recursively for *.json), globs, or fsspec URLs.",
    )
    out: str = Field("dataset", description="Output folder or fsspec URL (s3://...).")
    work_dir: str | None = Field(
        None,
        description="Folder for content-addressed shard outputs and caches, reused across "
        "runs; None means <out>/.work (or a local folder when out is a URL). With a "
        "multi-node Ray cluster it must be a filesystem every node sees.",
    )
    base_model: str = Field(
        "builtin:tiny",
        description="Base model for garbling: a local folder, a hub id, or builtin:tiny (a "
        "tiny random model made locally on first use).",
    )
    shard_bytes: PositiveInt = Field(
        16 << 20, description="Target input bytes per shard: the unit of fan-out and of caching."
    )
    ray_address: str | None = Field(
        None,
        description="Ray cluster to join (ray://host:10001, or auto); None uses RAY_ADDRESS "
        "if set, else starts a local Ray.",
    )
    ray_num_cpus: PositiveInt | None = Field(
        None, description="CPUs of a local Ray; None means every CPU. Ignored on a cluster."
    )
    shard_retries: int = Field(
        2, ge=0, le=10, description="Retries of a shard after a transient failure."
    )
    read: ReadSettings = Field(default_factory=ReadSettings, description="Reader limits.")
    garble: GarbleSettings = Field(default_factory=GarbleSettings, description="Garbling.")
    export: ExportSettings = Field(default_factory=ExportSettings, description="DPO/KTO export.")
    produced_by: str | None = Field(
        None,
        description="The adapter folder whose model collected these runs (a generation's "
        "producer): recorded with its weights digest, lineage and evaluation (its "
        "eval/eval.json) in generation.json. None records nothing.",
    )
    producer_evaluation: str | None = Field(
        None,
        description="The producer's evaluation, PATH/eval.json or PATH/eval.json#MODEL "
        "(e.g. the base's entry for generation 1); None reads produced_by's eval/eval.json.",
    )

    @model_validator(mode="after")
    def _check(self) -> BuildDatasetConfig:
        if (
            self.work_dir is not None
            and "://" in self.work_dir
            and not self.work_dir.startswith("file://")
        ):
            raise ValueError(
                f"work_dir={self.work_dir!r}: shard folders are written with local file "
                "operations; give a local or shared-filesystem path (out may still be a URL)"
            )
        return self

    def resolved_work_dir(self) -> str:
        """The work folder: ``work_dir``, else ``<out>/.work`` (a local cache folder for URLs)."""
        if self.work_dir:
            return self.work_dir.removeprefix("file://")
        if "://" in self.out and not self.out.startswith("file://"):
            return str(default_cache_dir() / "work")
        return os.path.join(self.out.removeprefix("file://"), ".work")
