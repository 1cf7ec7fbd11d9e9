"""One config model per command; ``Field(description=...)`` is each setting's only help text.

Models are frozen and reject unknown keys, so a misspelt setting fails loudly.
They double as Prefect flow parameters, so ``prefect.yaml`` goes through the same
validation.
"""

from __future__ import annotations

import os
from typing import TYPE_CHECKING, Literal, TypeVar

from pydantic import BaseModel, ConfigDict, Field, PositiveInt, model_validator

if TYPE_CHECKING:
    from agir_retrain.tasks.runs.reader import ReadLimits


SectionT = TypeVar("SectionT", bound=BaseModel)


class _Section(BaseModel):
    model_config = ConfigDict(frozen=True, extra="forbid")


class ReadSettings(_Section):
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

    def limits(self) -> ReadLimits:
        """The reader's limits from these settings."""
        from agir_retrain.tasks.runs.reader import (
            ReadLimits,
        )  # the reader imports polars; config must not

        return ReadLimits(
            max_file_bytes=self.max_file_bytes, max_message_chars=self.max_message_chars
        )


class IngestConfig(_Section):
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


class GarbleSettings(_Section):
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

    def sampling_key(self) -> dict[str, object]:
        """The settings that change what is sampled (batching and placement do not)."""
        return self.model_dump(exclude={"batch_size", "actors", "cpus_per_actor", "gpus_per_actor"})


class ExportSettings(_Section):
    """What goes into the DPO and KTO files, and how the DPO rows are split."""

    eval_share: float = Field(
        0.05,
        ge=0,
        lt=1,
        description="Share of runs whose pairs go to dpo/eval.jsonl (the split is by run, never by row).",
    )
    split_seed: int = Field(0, description="Seed of the train/eval split.")
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


class BuildDatasetConfig(_Section):
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
            from agir_retrain.tasks.synth.tiny_model import default_cache_dir

            return str(default_cache_dir() / "work")
        return os.path.join(self.out.removeprefix("file://"), ".work")


class LoraSettings(_Section):
    """The LoRA adapter (peft)."""

    r: PositiveInt = Field(16, description="LoRA rank.")
    alpha: PositiveInt = Field(32, description="LoRA alpha (the update is scaled by alpha / r).")
    dropout: float = Field(0.05, ge=0, lt=1, description="Dropout on the LoRA branch.")
    target_modules: list[str] | None = Field(
        None,
        description="Module names to adapt; None finds every linear (or 4-bit linear) layer of "
        "the model except its output head.",
    )


class DpoSettings(_Section):
    """DPO training (TRL's DPOConfig, the settings this program exposes)."""

    beta: float = Field(
        0.1, gt=0, description="DPO beta: how far the policy may move from the reference."
    )
    learning_rate: float = Field(5e-5, gt=0, description="Peak learning rate (LoRA parameters).")
    epochs: float = Field(
        1.0, gt=0, description="Passes over the training rows (ignored when max_steps is set)."
    )
    max_steps: PositiveInt | None = Field(
        None, description="Optimizer steps; None trains for `epochs`."
    )
    batch_size: PositiveInt = Field(1, description="Rows per device per step.")
    gradient_accumulation: PositiveInt = Field(
        8, description="Steps accumulated per optimizer update."
    )
    max_length: PositiveInt = Field(
        2048,
        description="Tokens per row (prompt + completion). Over-long prompts are shortened by "
        "cutting the middle of their longest messages; rows that still do not fit are dropped "
        "and counted.",
    )
    truncation_mode: Literal["keep_start", "keep_end"] = Field(
        "keep_start",
        description="TRL's truncation of a completion that alone overflows max_length "
        "(keep_end is deprecated in TRL 1.16).",
    )
    loss_types: list[str] = Field(
        default_factory=lambda: ["sigmoid"],
        description="TRL loss types, combined with loss_weights, e.g. [sigmoid, sft] for DPO "
        "with an SFT term on the chosen side.",
    )
    loss_weights: list[float] | None = Field(
        None, description="One weight per loss type; None weighs each 1.0."
    )
    gradient_checkpointing: bool = Field(True, description="Trade compute for activation memory.")
    seed: int = Field(42, description="Seed of initialisation, shuffling and dropout.")
    logging_steps: PositiveInt = Field(1, description="Log metrics every this many steps.")
    eval_steps: PositiveInt | None = Field(
        None, description="Evaluate every this many steps; None evaluates at the end only."
    )
    save_steps: PositiveInt = Field(50, description="Write a checkpoint every this many steps.")
    save_total_limit: PositiveInt = Field(2, description="Checkpoints kept (the oldest go first).")

    @model_validator(mode="after")
    def _check(self) -> DpoSettings:
        if self.loss_weights is not None and len(self.loss_weights) != len(self.loss_types):
            raise ValueError(
                f"loss_weights has {len(self.loss_weights)} weights for {len(self.loss_types)} "
                f"loss types {self.loss_types}: give one weight per loss type, or none"
            )
        return self


class LaunchSettings(_Section):
    """How the training program is launched (accelerate)."""

    num_processes: PositiveInt = Field(
        1,
        description="Processes (one per GPU); more than one launches through `accelerate launch`.",
    )
    accelerate_config: str | None = Field(
        None,
        description="An accelerate config: single_gpu, ddp or fsdp_qlora (container/accelerate/) "
        "or a path; None means single_gpu for one process and ddp for several.",
    )
    main_process_port: PositiveInt = Field(
        29500, description="Rendezvous port of a multi-process launch."
    )


class SubmitSettings(_Section):
    """Where the training job runs: this machine, a Docker engine, or a Prefect GPU work pool."""

    backend: Literal["local", "docker", "prefect"] = Field(
        "local",
        description="local: `accelerate launch` here; docker: build container/Dockerfile and run "
        "it on the Docker engine (every GPU requested when the host has some); prefect: run the "
        "`train` deployment on a GPU work pool and fetch its outputs from shared storage.",
    )
    image: str = Field(
        "agir-retrain", description="Image repository; the tag is the build context's hash."
    )
    base_image: str | None = Field(
        None,
        description="BASE_IMAGE build argument (a CUDA PyTorch image); None keeps the Dockerfile's.",
    )
    build_network: str | None = Field(
        None,
        description="Network of the docker build (e.g. host, where builds cannot reach PyPI otherwise).",
    )
    gpus: Literal["auto", "all", "none"] = Field(
        "auto",
        description="GPUs for the docker job: auto requests every GPU when the host has some.",
    )
    deployment: str = Field(
        "train/train-docker-gpu",
        description="Prefect deployment (flow/deployment) the prefect backend runs.",
    )
    work_pool_type: Literal["docker", "kubernetes", "process"] = Field(
        "docker", description="Kind of the deployment's work pool: decides the GPU job variables."
    )
    gpus_per_job: PositiveInt = Field(
        1, description="GPUs a prefect job asks for (Kubernetes nvidia.com/gpu limit)."
    )
    shared_storage: str | None = Field(
        None,
        description="fsspec URL both sides see (s3://bucket/runs); a prefect job writes its outputs "
        "there and they are fetched into `out`. None: `out` itself must be such a URL.",
    )
    timeout_s: PositiveInt = Field(
        24 * 3600, description="Longest a submitted job may run, in seconds."
    )


class TrainConfig(_Section):
    """Settings of the QLoRA DPO training program (`python -m agir_retrain.tasks.training`)."""

    dataset: str = Field(
        "dataset",
        description="A folder holding dpo/train.jsonl (and dpo/eval.jsonl) or train.jsonl "
        "(and eval.jsonl), or one JSONL file; local or an fsspec URL. Our rows, TRL's standard "
        "(strings) or conversational rows.",
    )
    eval_dataset: str | None = Field(
        None, description="An eval JSONL file; None uses the one beside the training file, if any."
    )
    base_model: str = Field(
        "builtin:tiny", description="Base model: a local folder, a hub id, or builtin:tiny."
    )
    out: str = Field(
        "adapter", description="Output folder: adapter, tokenizer, metrics, plots, model card."
    )
    quantize: bool = Field(
        True,
        description="Load the base in 4-bit NF4 with double quantization (bitsandbytes); "
        "False trains plain LoRA on a full-precision base.",
    )
    reference: Literal["adapter", "separate", "precomputed"] = Field(
        "adapter",
        description="The DPO reference: adapter = the base with the adapter disabled (no second "
        "copy); separate = a second (4-bit) copy of the base, as the seed did; precomputed = "
        "reference log-probs computed once before training.",
    )
    resume: bool = Field(
        False, description="Resume from the last checkpoint in `out`, if there is one."
    )
    merge: bool = Field(
        False,
        description="Also write the adapter merged into a full-precision copy of the base "
        "(out/merged); never merged into 4-bit weights.",
    )
    trust_remote_code: bool = Field(
        False, description="Allow a model's own code from its repository to run; off unless asked."
    )
    lora: LoraSettings = Field(default_factory=LoraSettings, description="LoRA.")
    dpo: DpoSettings = Field(default_factory=DpoSettings, description="DPO.")
    launch: LaunchSettings = Field(default_factory=LaunchSettings, description="Launch.")
    submit: SubmitSettings = Field(
        default_factory=SubmitSettings,
        description="Where the job runs (the program itself ignores it).",
    )


class RetrainConfig(_Section):
    """Settings of the retrain flow: build the dataset, train on it, archive the adapter.

    ``inputs``, ``out`` and ``base_model`` feed both sections: the dataset goes to
    ``<out>/dataset``, the adapter to ``<out>/adapter``, the archive to ``<out>/archives``,
    unless a section sets its own.
    """

    inputs: list[str] = Field(
        default_factory=list, description="Run files, folders, globs or fsspec URLs."
    )
    out: str = Field(
        "retrain-out", description="Folder (or URL) for the dataset, adapter and archive."
    )
    base_model: str = Field(
        "builtin:tiny",
        description="Base model for garbling and training: a folder, hub id, or builtin:tiny.",
    )
    archive_to: str | None = Field(
        None, description="Folder or URL for the archive; None means <out>/archives."
    )
    build: BuildDatasetConfig = Field(
        default_factory=BuildDatasetConfig, description="Dataset building."
    )
    train: TrainConfig = Field(default_factory=TrainConfig, description="Training.")

    @model_validator(mode="after")
    def _link_sections(self) -> RetrainConfig:
        """Fill the sections' inputs, outputs and model from the top level where unset."""
        out = self.out.rstrip("/")
        build = _where_unset(
            self.build, inputs=self.inputs, out=f"{out}/dataset", base_model=self.base_model
        )
        train = _where_unset(
            self.train, dataset=build.out, out=f"{out}/adapter", base_model=self.base_model
        )
        object.__setattr__(self, "build", build)
        object.__setattr__(self, "train", train)
        if self.archive_to is None:
            object.__setattr__(self, "archive_to", f"{out}/archives")
        return self


def _where_unset(section: SectionT, **values: object) -> SectionT:
    """A copy of ``section`` taking ``values`` for the fields it was not given."""
    return section.model_copy(
        update={key: value for key, value in values.items() if key not in section.model_fields_set}
    )
