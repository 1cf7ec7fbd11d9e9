"""The Trainer arguments every objective shares, from our settings: a pure mapping.

TRL's configs (DPOConfig, and SFT/KTO/GRPO's) all extend transformers' TrainingArguments;
these are the fields of it this program sets. Each objective adds its own on top.
"""

from __future__ import annotations

from typing import Any, Protocol


class Schedule(Protocol):
    """The optimisation settings an objective's section carries (``DpoSettings`` has them)."""

    learning_rate: float
    epochs: float
    max_steps: int | None
    batch_size: int
    gradient_accumulation: int
    seed: int
    logging_steps: int
    eval_steps: int | None
    save_steps: int
    save_total_limit: int


def trainer_arguments(
    out: str,
    schedule: Schedule,
    *,
    on_gpu: bool,
    bf16: bool,
    has_eval: bool,
    gradient_checkpointing: bool,
) -> dict[str, Any]:
    """TrainingArguments fields from the output folder and an objective's schedule."""
    return {
        "output_dir": out,
        "learning_rate": schedule.learning_rate,
        "num_train_epochs": schedule.epochs,
        "max_steps": schedule.max_steps or -1,  # -1: train for num_train_epochs
        "per_device_train_batch_size": schedule.batch_size,
        "per_device_eval_batch_size": schedule.batch_size,
        "gradient_accumulation_steps": schedule.gradient_accumulation,
        "gradient_checkpointing": gradient_checkpointing,
        "gradient_checkpointing_kwargs": {"use_reentrant": False},
        "seed": schedule.seed,
        "data_seed": schedule.seed,
        "logging_steps": schedule.logging_steps,
        # Scheduled evaluation only when asked and there is something to evaluate on;
        # the program evaluates at the end in any case.
        "eval_strategy": "steps" if schedule.eval_steps and has_eval else "no",
        "eval_steps": schedule.eval_steps,
        "save_strategy": "steps",
        "save_steps": schedule.save_steps,
        "save_total_limit": schedule.save_total_limit,
        "report_to": "none",
        "use_cpu": not on_gpu,
        "bf16": bf16,
        # LoRA leaves most parameters frozen; DDP's search for unused ones only costs time.
        "ddp_find_unused_parameters": False,
    }
