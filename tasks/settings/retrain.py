"""Settings of the retrain flow: the build and train sections, linked."""

from __future__ import annotations

from pydantic import Field, model_validator

from agir_retrain.tasks.settings.base import Section, where_unset
from agir_retrain.tasks.settings.build import BuildDatasetConfig
from agir_retrain.tasks.settings.train import TrainConfig


class RetrainConfig(Section):
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
        build = where_unset(
            self.build, inputs=self.inputs, out=f"{out}/dataset", base_model=self.base_model
        )
        train = where_unset(
            self.train, dataset=build.out, out=f"{out}/adapter", base_model=self.base_model
        )
        object.__setattr__(self, "build", build)
        object.__setattr__(self, "train", train)
        if self.archive_to is None:
            object.__setattr__(self, "archive_to", f"{out}/archives")
        return self
