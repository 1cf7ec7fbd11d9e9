"""Settings of `agir-retrain compare`: train each objective on one dataset, judge them alike."""

from __future__ import annotations

from pydantic import Field, PositiveInt, model_validator

from agir_retrain.tasks.objectives import BUILTIN
from agir_retrain.tasks.settings.base import Section
from agir_retrain.tasks.settings.evaluation import EvaluateConfig
from agir_retrain.tasks.settings.train import TrainConfig


class CompareConfig(Section):
    """One dataset, one base model: an adapter per objective, all evaluated on the same tasks."""

    dataset: str = Field(
        "dataset",
        description="A folder the dataset flow wrote (each objective's split, runs.parquet).",
    )
    base_model: str = Field(
        "builtin:tiny", description="Base model: a local folder, a hub id, or builtin:tiny."
    )
    out: str = Field(
        "compare",
        description="Output folder: <objective>/ (each adapter), eval/ (the evaluation), "
        "compare.json, compare.md, compare.png.",
    )
    objectives: list[str] = Field(
        default_factory=lambda: list(BUILTIN),
        min_length=1,
        description="The objectives to train and compare, in the table's order; by default "
        "every built-in one.",
    )
    max_steps: PositiveInt | None = Field(
        None, description="Optimizer steps of every objective; None keeps each section's own."
    )
    train: TrainConfig = Field(
        default_factory=TrainConfig,
        description="Training settings shared by the objectives (their dataset, base_model, "
        "objective and out are set by the comparison).",
    )
    evaluate: EvaluateConfig = Field(
        default_factory=EvaluateConfig,
        description="Evaluation settings (its dataset, base_model, adapters and out are set by "
        "the comparison).",
    )

    @model_validator(mode="after")
    def _registered(self) -> CompareConfig:
        """After ``train``, whose ``objective_plugins`` may register the objectives named."""
        from agir_retrain.tasks.objectives import names

        unknown = [name for name in self.objectives if name not in names()]
        if unknown:
            raise ValueError(
                f"objectives: no objective {unknown}; choose from {', '.join(names())} "
                "(an objective of your own: name its module in train.objective_plugins)"
            )
        return self

    def train_config(self, objective: str) -> TrainConfig:
        """The training settings of one objective."""
        return self.train.model_copy(
            update={
                "dataset": self.dataset,
                "base_model": self.base_model,
                "objective": objective,
                "out": f"{self.out.rstrip('/')}/{objective}",
                "eval_dataset": None,
                "max_steps": self.max_steps or self.train.max_steps,
            }
        )

    def evaluate_config(self, adapters: dict[str, str]) -> EvaluateConfig:
        """The evaluation settings: base and every adapter on the dataset's held-out tasks."""
        return self.evaluate.model_copy(
            update={
                "dataset": self.dataset,
                "tasks": None,
                "completions": None,
                "base_model": self.base_model,
                "adapters": [f"{label}={path}" for label, path in adapters.items()],
                "out": f"{self.out.rstrip('/')}/eval",
            }
        )
