"""SFT: learn the records that freed space. Its settings, its rows (with rehearsal), its TRL config.

Rows are the dataset flow's ``sft/train.jsonl`` (prompt -> the completion that freed
space), TRL's prompt-completion format: the loss falls on the completion (the assistant
turn) alone. Optional rehearsal rows from a general chat file are mixed in at a set share.
"""

from __future__ import annotations

import logging
from collections.abc import Sequence
from dataclasses import replace
from typing import TYPE_CHECKING, Any

from pydantic import Field

from agir_retrain.tasks.errors import DatasetError
from agir_retrain.tasks.filenames import COMPLETION_EVAL, COMPLETION_TRAIN
from agir_retrain.tasks.io import exists
from agir_retrain.tasks.objectives import Curve, Headline, SettingFile, Split, TrainingData
from agir_retrain.tasks.settings.train import ScheduleSettings
from agir_retrain.tasks.training.completions import (
    load_completion_rows,
    mix_rehearsal,
    rehearsal_rows,
)
from agir_retrain.tasks.training.objective import TrlObjective

if TYPE_CHECKING:
    from agir_retrain.tasks.settings.train import TrainConfig

log = logging.getLogger(__name__)

REHEARSAL_KEY = "sft.rehearsal_file"
REHEARSAL_NAME = "rehearsal.jsonl"  # its name once shipped to a job elsewhere


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


class Sft(TrlObjective):
    """SFT on the completion split (``sft/``), rehearsal rows mixed in if a file is set."""

    name = "sft"
    summary = "the successful records of sft/"
    settings = SftSettings
    splits = (Split(train=COMPLETION_TRAIN, eval=COMPLETION_EVAL),)
    columns = ("prompt", "completion")
    curves = (
        Curve(file="loss.png", train_key="loss", eval_key="eval_loss", title="SFT loss"),
        Curve(
            file="token_accuracy.png",
            train_key="mean_token_accuracy",
            eval_key="eval_mean_token_accuracy",
            title="token accuracy",
        ),
    )
    headlines = (Headline(key="mean_token_accuracy", label="token accuracy", spec=".3f"),)

    def trl_classes(self) -> tuple[type, type]:
        """TRL's SFTConfig and SFTTrainer."""
        from trl import SFTConfig, SFTTrainer

        return SFTConfig, SFTTrainer

    def file_settings(self, config: TrainConfig) -> tuple[SettingFile, ...]:
        """The rehearsal file, if one is set."""
        rehearsal = self.section(config).rehearsal_file
        if not rehearsal:
            return ()
        return (SettingFile(key=REHEARSAL_KEY, path=rehearsal, name=REHEARSAL_NAME),)

    def extra_files(self, config: TrainConfig) -> tuple[SettingFile, ...]:
        """The rehearsal file, checked to exist."""
        files = self.file_settings(config)
        for file in files:
            if not exists(file.path):
                raise DatasetError(f"{file.key}={file.path!r}: no such file")
        return files

    def load_data(self, config: TrainConfig) -> TrainingData:
        """The checked training rows (rehearsal mixed in) and eval rows."""
        data = self.read_split(config, load_completion_rows)
        section, train = self.section(config), data.train
        for rehearsal in (file.path for file in data.files.extra if file.key == REHEARSAL_KEY):
            mixed = mix_rehearsal(
                train, rehearsal_rows(rehearsal), section.rehearsal_share, section.seed
            )
            log.info(
                "rehearsal: %d general rows mixed into %d", len(mixed) - len(train), len(train)
            )
            train = mixed
        return replace(data, train=train)

    def own_arguments(
        self, config: TrainConfig, section: Any, train_rows: Sequence[dict[str, Any]]
    ) -> dict[str, Any]:
        """The budget; prompt-completion rows put the loss on the completion only."""
        return {"max_length": section.max_length, "completion_only_loss": True, "packing": False}


OBJECTIVE = Sft()
