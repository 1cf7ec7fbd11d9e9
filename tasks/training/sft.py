"""SFT: what is SFT's own. TRL's SFTConfig from our settings, the rows (with rehearsal), the trainer.

Rows are the dataset flow's ``sft/train.jsonl`` (prompt -> the completion that freed
space), TRL's prompt-completion format: the loss falls on the completion (the assistant
turn) alone. Optional rehearsal rows from a general chat file are mixed in at a set share.
"""

from __future__ import annotations

import logging
from dataclasses import replace
from typing import Any

from agir_retrain.tasks.errors import DatasetError
from agir_retrain.tasks.io import exists
from agir_retrain.tasks.settings.models import TrainConfig
from agir_retrain.tasks.training.arguments import trainer_arguments
from agir_retrain.tasks.training.completions import (
    load_completion_rows,
    locate_split,
    mix_rehearsal,
    rehearsal_rows,
)
from agir_retrain.tasks.training.data import DataFiles, SettingFile
from agir_retrain.tasks.training.outputs import Curve

log = logging.getLogger(__name__)

NAME = "sft"
REHEARSAL_KEY = "sft.rehearsal_file"
COLUMNS = ("prompt", "completion")
CURVES = (
    Curve(file="loss.png", train_key="loss", eval_key="eval_loss", title="SFT loss"),
    Curve(
        file="token_accuracy.png",
        train_key="mean_token_accuracy",
        eval_key="eval_mean_token_accuracy",
        title="token accuracy",
    ),
)


def reference(config: TrainConfig) -> str:
    """SFT has no reference model."""
    return "none"


def max_length(config: TrainConfig) -> int:
    """Tokens per row."""
    return config.sft.max_length


def data_files(config: TrainConfig) -> DataFiles:
    """``sft/train.jsonl`` (or one file) and its eval file, and the rehearsal file if one is set."""
    files = locate_split(config.dataset, "sft", config.eval_dataset)
    rehearsal = config.sft.rehearsal_file
    if not rehearsal:
        return files
    if not exists(rehearsal):
        raise DatasetError(f"sft.rehearsal_file={rehearsal!r}: no such file")
    return replace(files, extra=(SettingFile(key=REHEARSAL_KEY, path=rehearsal),))


def load_data(config: TrainConfig) -> tuple[DataFiles, list[dict[str, Any]], list[dict[str, Any]]]:
    """The checked training rows (rehearsal mixed in) and eval rows."""
    files = data_files(config)
    train = load_completion_rows(files.train)
    evaluation = load_completion_rows(files.eval, allow_empty=True) if files.eval else []
    settings = config.sft
    for rehearsal in (f.path for f in files.extra if f.key == REHEARSAL_KEY):
        mixed = mix_rehearsal(
            train, rehearsal_rows(rehearsal), settings.rehearsal_share, settings.seed
        )
        log.info("rehearsal: %d general rows mixed into %d", len(mixed) - len(train), len(train))
        train = mixed
    return files, train, evaluation


def sft_config(
    config: TrainConfig, *, on_gpu: bool, bf16: bool, has_eval: bool, gradient_checkpointing: bool
) -> dict[str, Any]:
    """The keyword arguments of TRL's SFTConfig for these settings (pure: no torch, no TRL)."""
    sft = config.sft
    return trainer_arguments(
        config.out,
        sft,
        on_gpu=on_gpu,
        bf16=bf16,
        has_eval=has_eval,
        gradient_checkpointing=gradient_checkpointing,
        tracking=config.tracking,
    ) | {
        "max_length": sft.max_length,
        # Prompt-completion rows: the loss on the completion only (the assistant turn).
        "completion_only_loss": True,
        "packing": False,
    }


def to_dataset(rows: list[dict[str, Any]]) -> Any:
    """A datasets.Dataset of the rows' prompt and completion (provenance left out)."""
    from datasets import Dataset

    return Dataset.from_list([{key: row[key] for key in COLUMNS} for row in rows])


def build_trainer(
    config: TrainConfig,
    *,
    base: str,
    model: Any,
    tokenizer: Any,
    peft_config: Any,
    train_rows: list[dict[str, Any]],
    eval_rows: list[dict[str, Any]],
    gradient_checkpointing: bool,
) -> Any:
    """TRL's SFTTrainer over the policy and the fitted rows."""
    from trl import SFTConfig, SFTTrainer

    from agir_retrain.tasks.training.model import precision_flags

    args = SFTConfig(
        **sft_config(
            config,
            **precision_flags(),
            has_eval=bool(eval_rows),
            gradient_checkpointing=gradient_checkpointing,
        )
    )
    return SFTTrainer(
        model=model,
        args=args,
        train_dataset=to_dataset(train_rows),
        eval_dataset=to_dataset(eval_rows) if eval_rows else None,
        processing_class=tokenizer,
        peft_config=peft_config,
    )
