"""KTO: learn from single completions labelled desirable or not. Its settings, rows, TRL config.

KTO learns from ``kto/train.jsonl``, so it uses the runs DPO must discard for want of a
pair. TRL advises weighting the two losses so that ``desirable_weight * n_desirable`` is
within 1:1 to 4:3 of ``undesirable_weight * n_undesirable``; unless a weight is given,
the desirable one is set in the middle of that band for the actual counts.
"""

from __future__ import annotations

from collections.abc import Sequence
from functools import partial
from typing import TYPE_CHECKING, Any, Literal

from pydantic import Field, PositiveInt

from agir_retrain.tasks.errors import DatasetError
from agir_retrain.tasks.filenames import LABELLED_EVAL, LABELLED_TRAIN
from agir_retrain.tasks.objectives import Curve, Headline, Split, TrainingData
from agir_retrain.tasks.settings.train import ScheduleSettings
from agir_retrain.tasks.training.completions import load_completion_rows
from agir_retrain.tasks.training.objective import TrlObjective

if TYPE_CHECKING:
    from agir_retrain.tasks.settings.train import TrainConfig

# Middle of TRL's advised band [1, 4/3] for desirable_weight * n_d / (undesirable_weight * n_u).
BAND_MIDDLE = 1.15


class KtoSettings(ScheduleSettings):
    """KTO on the labelled completions of kto/train.jsonl (TRL's KTOTrainer)."""

    batch_size: PositiveInt = Field(
        4,
        ge=2,
        description="Rows per device per step; KTO estimates its KL term from mismatched "
        "pairs within a batch, so at least 2.",
    )
    gradient_accumulation: PositiveInt = Field(
        2, description="Steps accumulated per optimizer update."
    )
    beta: float = Field(
        0.1, gt=0, description="KTO beta: how far the policy may move from the reference."
    )
    reference: Literal["adapter", "precomputed"] = Field(
        "adapter",
        description="The reference: adapter = the base with the adapter disabled; precomputed "
        "= reference log-probs computed once before training.",
    )
    desirable_weight: float | None = Field(
        None,
        gt=0,
        description="Weight of the desirable rows' loss; None balances it for the actual counts "
        "as TRL advises (desirable_weight * n_desirable within 1:1 to 4:3 of "
        "undesirable_weight * n_undesirable).",
    )
    undesirable_weight: float = Field(
        1.0, gt=0, description="Weight of the undesirable rows' loss."
    )


def balanced_weights(
    desirable: int, undesirable: int, desirable_weight: float | None, undesirable_weight: float
) -> tuple[float, float]:
    """(desirable_weight, undesirable_weight) within TRL's advised band for these counts."""
    if desirable_weight is not None:
        return desirable_weight, undesirable_weight
    ratio = max(undesirable, 1) * undesirable_weight / max(desirable, 1)
    return round(ratio * BAND_MIDDLE, 4), undesirable_weight


class Kto(TrlObjective):
    """KTO on the labelled split (``kto/``); its reference is the base, adapter disabled."""

    name = "kto"
    summary = "the labelled completions of kto/"
    settings = KtoSettings
    splits = (Split(train=LABELLED_TRAIN, eval=LABELLED_EVAL),)
    columns = ("prompt", "completion", "label")
    curves = (
        Curve(file="loss.png", train_key="loss", eval_key="eval_loss", title="KTO loss"),
        Curve(
            file="reward_margin.png",
            train_key="rewards/margins",
            eval_key="eval_rewards/margins",
            title="reward margin",
        ),
    )
    headlines = (Headline(key="rewards/margins", label="reward margin", spec=".4f"),)

    def trl_classes(self) -> tuple[type, type]:
        """TRL's KTOConfig and KTOTrainer."""
        from trl import KTOConfig, KTOTrainer

        return KTOConfig, KTOTrainer

    def load_data(self, config: TrainConfig) -> TrainingData:
        """The checked labelled rows (both labels needed) and eval rows, if any."""
        data = self.read_split(config, partial(load_completion_rows, labelled=True))
        labels = {row["label"] for row in data.train}
        if len(labels) < 2:
            raise DatasetError(
                f"{data.files.train}: every row is labelled {labels.pop()}; KTO needs desirable "
                "and undesirable rows"
            )
        return data

    def own_arguments(
        self, config: TrainConfig, section: Any, train_rows: Sequence[dict[str, Any]]
    ) -> dict[str, Any]:
        """Beta, the budget, the loss weights balanced for the rows' label counts."""
        desirable = sum(1 for row in train_rows if row["label"])
        weight_d, weight_u = balanced_weights(
            desirable,
            len(train_rows) - desirable,
            section.desirable_weight,
            section.undesirable_weight,
        )
        return {
            "beta": section.beta,
            "max_length": section.max_length,
            "desirable_weight": weight_d,
            "undesirable_weight": weight_u,
            "precompute_ref_log_probs": section.reference == "precomputed",
        }


OBJECTIVE = Kto()
