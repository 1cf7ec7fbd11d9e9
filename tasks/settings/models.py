"""One config model per command; ``Field(description=...)`` is each setting's only help text.

Models are frozen and reject unknown keys, so a misspelt setting fails loudly. They double
as Prefect flow parameters, so ``prefect.yaml`` goes through the same validation. The
models live by command (``build``, ``train``, ``retrain``); this module gathers them.
"""

from agir_retrain.tasks.settings.build import (
    BuildDatasetConfig,
    ExportSettings,
    GarbleSettings,
    IngestConfig,
    ReadSettings,
)
from agir_retrain.tasks.settings.retrain import RetrainConfig
from agir_retrain.tasks.settings.train import (
    DpoSettings,
    LaunchSettings,
    LoraSettings,
    SubmitSettings,
    TrainConfig,
)

__all__ = [
    "BuildDatasetConfig",
    "DpoSettings",
    "ExportSettings",
    "GarbleSettings",
    "IngestConfig",
    "LaunchSettings",
    "LoraSettings",
    "ReadSettings",
    "RetrainConfig",
    "SubmitSettings",
    "TrainConfig",
]
