"""DPO: learn from chosen/rejected pairs. Its settings, its rows, its TRL config, its reference.

The reference is the base with the adapter disabled (``adapter``, no second copy), a
second 4-bit copy of the base (``separate``, as the seed did), or log-probabilities
computed once before training (``precomputed``).
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import TYPE_CHECKING, Any, Literal

from pydantic import Field, PositiveInt, model_validator

from agir_retrain.tasks.filenames import PREFERENCE_EVAL, PREFERENCE_TRAIN
from agir_retrain.tasks.objectives import Curve, Headline, Split, TrainingData
from agir_retrain.tasks.settings.train import ScheduleSettings
from agir_retrain.tasks.training.objective import TrlObjective
from agir_retrain.tasks.training.preference import load_rows

if TYPE_CHECKING:
    from agir_retrain.tasks.settings.train import TrainConfig


class DpoSettings(ScheduleSettings):
    """DPO training (TRL's DPOConfig, the settings this program exposes)."""

    beta: float = Field(
        0.1, gt=0, description="DPO beta: how far the policy may move from the reference."
    )
    reference: Literal["adapter", "separate", "precomputed"] = Field(
        "adapter",
        description="The reference: adapter = the base with the adapter disabled (no second "
        "copy); separate = a second (4-bit) copy of the base, as the seed did; precomputed = "
        "reference log-probs computed once before training.",
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


class Dpo(TrlObjective):
    """DPO on the preference split (``dpo/``, or the older flat ``train.jsonl``)."""

    name = "dpo"
    summary = "chosen/rejected pairs of dpo/"
    settings = DpoSettings
    splits = (Split(train=PREFERENCE_TRAIN, eval=PREFERENCE_EVAL),)
    flat_layout = True
    columns = ("prompt", "chosen", "rejected")
    curves = (
        Curve(file="loss.png", train_key="loss", eval_key="eval_loss", title="DPO loss"),
        Curve(
            file="reward_accuracy.png",
            train_key="rewards/accuracies",
            eval_key="eval_rewards/accuracies",
            title="reward accuracy",
        ),
        Curve(
            file="reward_margin.png",
            train_key="rewards/margins",
            eval_key="eval_rewards/margins",
            title="reward margin",
        ),
    )
    headlines = (
        Headline(key="rewards/accuracies", label="reward accuracy", spec=".3f"),
        Headline(key="rewards/margins", label="reward margin", spec=".4f"),
    )

    def trl_classes(self) -> tuple[type, type]:
        """TRL's DPOConfig and DPOTrainer."""
        from trl import DPOConfig, DPOTrainer

        return DPOConfig, DPOTrainer

    def load_data(self, config: TrainConfig) -> TrainingData:
        """The checked preference rows and eval rows (one format per file)."""
        return self.read_split(config, load_rows)

    def own_arguments(
        self, config: TrainConfig, section: Any, train_rows: Sequence[dict[str, Any]]
    ) -> dict[str, Any]:
        """Beta, the budget, the losses, and whether the reference is precomputed."""
        return {
            "beta": section.beta,
            "max_length": section.max_length,
            "truncation_mode": section.truncation_mode,
            "loss_type": list(section.loss_types),
            "loss_weights": (
                list(section.loss_weights) if section.loss_weights is not None else None
            ),
            "precompute_ref_log_probs": section.reference == "precomputed",
        }

    def trainer_inputs(
        self, config: TrainConfig, *, base: str, train_rows: Sequence[dict[str, Any]]
    ) -> dict[str, Any]:
        """The reference: a second copy of the base for ``separate``; None otherwise.

        None with a peft policy makes TRL disable the adapter for the reference forward
        (``adapter``) or compute the reference log-probabilities once up front (``precomputed``).
        """
        if self.section(config).reference != "separate":
            return {"ref_model": None}
        from agir_retrain.tasks.training.model import load_base

        return {
            "ref_model": load_base(
                base,
                quantize=config.quantize,
                trust_remote_code=config.trust_remote_code,
                dtype=config.dtype,
            )
        }


OBJECTIVE = Dpo()
