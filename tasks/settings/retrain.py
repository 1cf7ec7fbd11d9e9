"""Settings of the retrain flow: the build and train sections, linked."""

from __future__ import annotations

from pydantic import Field, model_validator

from agir_retrain.tasks.settings.base import Section, where_unset
from agir_retrain.tasks.settings.build import BuildDatasetConfig
from agir_retrain.tasks.settings.evaluation import EvaluateConfig
from agir_retrain.tasks.settings.train import TrainConfig


class RetrainConfig(Section):
    """Settings of the retrain flow: build the dataset, train on it, (evaluate,) archive.

    ``inputs``, ``out`` and ``base_model`` feed every section: the dataset goes to
    ``<out>/dataset``, the adapter to ``<out>/adapter``, the evaluation to
    ``<out>/adapter/eval``, the archive to ``<out>/archives``, unless a section sets its own.
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
    evaluate: bool = Field(
        False,
        description="After training, evaluate the base model and the new adapter on the "
        "dataset's held-out runs in the sandbox (settings in `evaluation`); the results go to "
        "<adapter>/eval, so the archive carries eval/eval.json.",
    )
    evaluation: EvaluateConfig = Field(
        default_factory=EvaluateConfig,
        description="The evaluation stage (when `evaluate` is on); its dataset, base model and "
        "out are filled from the sections above, and the new adapter is added to its models.",
    )

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
        earlier = train.generations.datasets
        if earlier and build.out not in earlier:  # the dataset built here is the newest generation
            generations = train.generations.model_copy(update={"datasets": [*earlier, build.out]})
            train = train.model_copy(update={"generations": generations})
        evaluation = where_unset(
            self.evaluation,
            dataset=build.out,
            base_model=self.base_model,
            out=f"{train.out.rstrip('/')}/eval",
        )
        object.__setattr__(self, "build", build)
        object.__setattr__(self, "train", train)
        object.__setattr__(self, "evaluation", evaluation)
        if self.archive_to is None:
            object.__setattr__(self, "archive_to", f"{out}/archives")
        return self
