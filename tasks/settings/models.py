"""One config model per command; ``Field(description=...)`` is each setting's only help text.

Models are frozen and reject unknown keys, so a misspelt setting fails loudly. They double
as Prefect flow parameters, so ``prefect.yaml`` goes through the same validation. The
models live by command (``build``, ``train``, ``retrain``); this module gathers them. An
objective's own section lives in its module (``tasks/training/<name>.py``).
"""

from agir_retrain.tasks.settings.build import (
    BuildDatasetConfig,
    ExportSettings,
    GarbleSettings,
    IngestConfig,
    ReadSettings,
)
from agir_retrain.tasks.settings.retrain import RetrainConfig
from agir_retrain.tasks.settings.submit import LaunchSettings, SubmitSettings
from agir_retrain.tasks.settings.train import LoraSettings, ScheduleSettings, TrainConfig

__all__ = [
    "BuildDatasetConfig",
    "ExportSettings",
    "GarbleSettings",
    "IngestConfig",
    "LaunchSettings",
    "LoraSettings",
    "ReadSettings",
    "RetrainConfig",
    "ScheduleSettings",
    "SubmitSettings",
    "TrainConfig",
]
