"""Settings of the training program and of where it runs (launch, submission)."""

from __future__ import annotations

from typing import Literal

from pydantic import Field, PositiveInt, model_validator

from agir_retrain.tasks.settings.base import Section
from agir_retrain.tasks.settings.environment import EnvironmentSettings
from agir_retrain.tasks.settings.generations import GenerationsSettings, Lineage
from agir_retrain.tasks.settings.tracking import TrackingSettings


class LoraSettings(Section):
    """The LoRA adapter (peft)."""

    r: PositiveInt = Field(16, description="LoRA rank.")
    alpha: PositiveInt = Field(32, description="LoRA alpha (the update is scaled by alpha / r).")
    dropout: float = Field(0.05, ge=0, lt=1, description="Dropout on the LoRA branch.")
    target_modules: list[str] | None = Field(
        None,
        description="Module names to adapt; None finds every linear (or 4-bit linear) layer of "
        "the model except its output head.",
    )


class ScheduleSettings(Section):
    """The optimisation schedule every objective shares (TRL's TrainingArguments)."""

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
        description="Tokens per row (prompt + completion); over-long prompts are shortened, rows "
        "that still do not fit are dropped and counted.",
    )
    gradient_checkpointing: bool = Field(True, description="Trade compute for activation memory.")
    seed: int = Field(42, description="Seed of initialisation, shuffling, sampling and dropout.")
    logging_steps: PositiveInt = Field(1, description="Log metrics every this many steps.")
    eval_steps: PositiveInt | None = Field(
        None, description="Evaluate every this many steps; None evaluates at the end only."
    )
    save_steps: PositiveInt = Field(50, description="Write a checkpoint every this many steps.")
    save_total_limit: PositiveInt = Field(2, description="Checkpoints kept (the oldest go first).")


class DpoSettings(ScheduleSettings):
    """DPO training (TRL's DPOConfig, the settings this program exposes)."""

    beta: float = Field(
        0.1, gt=0, description="DPO beta: how far the policy may move from the reference."
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

    @model_validator(mode="after")
    def _check(self) -> DpoSettings:
        if self.loss_weights is not None and len(self.loss_weights) != len(self.loss_types):
            raise ValueError(
                f"loss_weights has {len(self.loss_weights)} weights for {len(self.loss_types)} "
                f"loss types {self.loss_types}: give one weight per loss type, or none"
            )
        return self


class SftSettings(ScheduleSettings):
    """Supervised fine-tuning on the successful records (TRL's SFTTrainer, loss on completions)."""

    learning_rate: float = Field(1e-4, gt=0, description="Peak learning rate (LoRA parameters).")
    rehearsal_file: str | None = Field(
        None,
        description="A general chat JSONL ({messages: [...]} or {prompt, completion} rows) whose "
        "rows are mixed into the training rows so general skills are not forgotten; None: none.",
    )
    rehearsal_share: float = Field(
        0.1,
        ge=0,
        le=10,
        description="Rehearsal rows per training row (0.1 = 500 general rows into 5,000); "
        "capped by the rows the file has; drawn and placed deterministically from `seed`.",
    )


class KtoSettings(ScheduleSettings):
    """KTO on the labelled completions of kto/train.jsonl (TRL's KTOTrainer)."""

    batch_size: PositiveInt = Field(
        4,
        ge=2,
        description="Rows per device per step; KTO estimates its KL term from mismatched "
        "pairs within a batch, so at least 2.",
    )
    gradient_accumulation: PositiveInt = Field(
        2, description="Steps accumulated per optimizer update."
    )
    beta: float = Field(
        0.1, gt=0, description="KTO beta: how far the policy may move from the reference."
    )
    desirable_weight: float | None = Field(
        None,
        gt=0,
        description="Weight of the desirable rows' loss; None balances it for the actual counts "
        "as TRL advises (desirable_weight * n_desirable within 1:1 to 4:3 of "
        "undesirable_weight * n_undesirable).",
    )
    undesirable_weight: float = Field(
        1.0, gt=0, description="Weight of the undesirable rows' loss."
    )


class GrpoSettings(ScheduleSettings):
    """GRPO with an execution reward: each completion's program runs in the environment."""

    learning_rate: float = Field(1e-5, gt=0, description="Peak learning rate (LoRA parameters).")
    batch_size: PositiveInt = Field(
        1, description="Prompts per device per optimizer step (each sampled num_generations times)."
    )
    gradient_accumulation: PositiveInt = Field(
        1, description="Prompt batches accumulated per optimizer update."
    )
    gradient_checkpointing: bool = Field(False, description="Trade compute for activation memory.")
    num_generations: PositiveInt = Field(
        8,
        ge=2,
        description="Completions sampled per prompt (the group whose rewards are compared).",
    )
    temperature: float = Field(1.0, gt=0, description="Sampling temperature of the completions.")
    beta: float = Field(
        0.04, ge=0, description="KL coefficient against the base (the adapter disabled); 0: none."
    )
    max_prompt_length: PositiveInt = Field(
        1536, description="Tokens per prompt; longer prompts are shortened in their middle."
    )
    max_completion_length: PositiveInt = Field(
        512, description="Most tokens sampled per completion."
    )
    scenarios: list[str] = Field(
        default_factory=lambda: ["debian-like"],
        min_length=1,
        description="Scenarios (profile names or files) dealt round-robin over the prompts sorted by id.",
    )
    workers: PositiveInt = Field(
        2,
        description="Local processes running one step's episodes (Ray runs them when `ray` is set).",
    )
    ray: bool = Field(
        False,
        description="Run each step's episodes as Ray tasks on the cluster `ray.init()` finds.",
    )
    environment: EnvironmentSettings = Field(
        default_factory=EnvironmentSettings,
        description="The sandbox the episodes run in, and the reward weights (environment.reward).",
    )


class LaunchSettings(Section):
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


class SubmitSettings(Section):
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
        description="fsspec URL both sides see (s3://bucket/runs, or file:// on a shared "
        "filesystem); the prefect backend uploads a local dataset's training and eval files "
        "there, and the job writes its outputs there to be fetched into `out`. None: the "
        "dataset and `out` must themselves be such URLs.",
    )
    timeout_s: PositiveInt = Field(
        24 * 3600,
        description="Longest a submitted job may run, in seconds; past it the job (its whole "
        "process group, or its container) is stopped and reported as timed out.",
    )
    network: bool = Field(
        False,
        description="Give the docker job a network. Off: it can reach nothing, so the base model "
        "must be a local folder (or builtin:tiny); on: a hub id is downloaded inside.",
    )
    memory_limit: str | None = Field(
        "64g",
        description="Memory cap of the docker job (docker's --memory: 512m, 64g, or bytes), "
        "swap included; None: no cap.",
    )
    pids_limit: PositiveInt | None = Field(
        4096, description="Most processes and threads the docker job may run; None: no cap."
    )
    shm_size: str | None = Field(
        "8g",
        description="Size of the docker job's /dev/shm (torch data workers and NCCL use it); "
        "None: docker's 64m.",
    )
    container_user: str | None = Field(
        None,
        description="uid:gid the docker job runs as (never root); None: the caller's, or "
        "1000:1000 (the image's agir user) when the caller is root.",
    )


class TrainConfig(Section):
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
    objective: Literal["dpo", "sft", "kto", "grpo"] = Field(
        "dpo",
        description="What the adapter learns from: dpo (chosen/rejected pairs of dpo/), sft (the "
        "successful records of sft/), kto (the labelled completions of kto/) or grpo (the code "
        "prompts, rewarded by running each sampled program in the environment).",
    )
    dpo: DpoSettings = Field(default_factory=DpoSettings, description="DPO.")
    sft: SftSettings = Field(default_factory=SftSettings, description="SFT.")
    kto: KtoSettings = Field(default_factory=KtoSettings, description="KTO.")
    grpo: GrpoSettings = Field(default_factory=GrpoSettings, description="GRPO.")
    launch: LaunchSettings = Field(default_factory=LaunchSettings, description="Launch.")
    tracking: TrackingSettings = Field(
        default_factory=TrackingSettings,
        description="Experiment trackers the run reports to (none by default).",
    )
    submit: SubmitSettings = Field(
        default_factory=SubmitSettings,
        description="Where the job runs (the program itself ignores it).",
    )
    generations: GenerationsSettings = Field(
        default_factory=GenerationsSettings,
        description="Several datasets, one per generation, and the window trained on.",
    )
    lineage: Lineage | None = Field(
        None,
        description="Set when a window of generations is prepared for submission (not by hand): "
        "what the adapter learns from; written beside it as lineage.json.",
    )
