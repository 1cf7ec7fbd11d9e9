"""The Trainer arguments every objective shares, from our settings: a pure mapping.

TRL's configs all extend transformers' TrainingArguments; these are the fields of it this
program sets. Each objective adds its own on top (``TrlObjective.own_arguments``).
"""

from __future__ import annotations

from pathlib import PurePath
from typing import Any, Protocol

from agir_retrain.tasks.settings.tracking import TrackingSettings


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
    tracking: TrackingSettings | None = None,
) -> dict[str, Any]:
    """TrainingArguments fields from the output folder, an objective's schedule and the trackers."""
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
        **tracking_arguments(out, tracking or TrackingSettings()),
        "use_cpu": not on_gpu,
        "bf16": bf16,
        # LoRA leaves most parameters frozen; DDP's search for unused ones only costs time.
        "ddp_find_unused_parameters": False,
    }


def run_name(out: str, tracking: TrackingSettings) -> str:
    """The run's name in every tracker: the setting, or the name of the output folder."""
    return tracking.run_name or PurePath(out.rstrip("/")).name or "adapter"


def tracking_arguments(out: str, tracking: TrackingSettings) -> dict[str, Any]:
    """``report_to`` ("none" when no tracker is named), the run's name and Trackio's project.

    Where each tracker writes is not a TrainingArguments field in transformers 5 (its
    ``logging_dir`` is gone): ``tracking.tracker_environment`` sets the variables the
    callbacks read, inside the training process.
    """
    if not tracking.report_to:
        return {"report_to": "none"}
    return {
        "report_to": list(tracking.report_to),
        "run_name": run_name(out, tracking),
        "project": tracking.project,  # Trackio's project (the only tracker reading it)
    }
