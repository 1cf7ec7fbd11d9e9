"""KTO: what is KTO's own. TRL's KTOConfig from our settings and the label counts, the trainer.

KTO learns from single completions labelled desirable or not (``kto/train.jsonl``), so it
uses the runs DPO must discard for want of a pair. TRL advises weighting the two losses
so that ``desirable_weight * n_desirable`` is within 1:1 to 4:3 of
``undesirable_weight * n_undesirable``; unless a weight is given, the desirable one is
set in the middle of that band for the actual counts.
"""

from __future__ import annotations

from typing import Any

from agir_retrain.tasks.errors import DatasetError
from agir_retrain.tasks.settings.models import TrainConfig
from agir_retrain.tasks.training.arguments import trainer_arguments
from agir_retrain.tasks.training.completions import load_completion_rows, locate_split
from agir_retrain.tasks.training.data import DataFiles
from agir_retrain.tasks.training.outputs import Curve

NAME = "kto"
COLUMNS = ("prompt", "completion", "label")
# Middle of TRL's advised band [1, 4/3] for desirable_weight * n_d / (undesirable_weight * n_u).
BAND_MIDDLE = 1.15
CURVES = (
    Curve(file="loss.png", train_key="loss", eval_key="eval_loss", title="KTO loss"),
    Curve(
        file="reward_margin.png",
        train_key="rewards/margins",
        eval_key="eval_rewards/margins",
        title="reward margin",
    ),
)


def reference(config: TrainConfig) -> str:
    """The base with the adapter disabled, or precomputed log-probs (``separate`` is DPO's)."""
    return "precomputed" if config.reference == "precomputed" else "adapter"


def max_length(config: TrainConfig) -> int:
    """Tokens per row."""
    return config.kto.max_length


def data_files(config: TrainConfig) -> DataFiles:
    """``kto/train.jsonl`` (or one file) and its eval file."""
    return locate_split(config.dataset, "kto", config.eval_dataset)


def load_data(config: TrainConfig) -> tuple[DataFiles, list[dict[str, Any]], list[dict[str, Any]]]:
    """The checked labelled rows (both labels needed) and eval rows, if any."""
    files = data_files(config)
    train = load_completion_rows(files.train, labelled=True)
    labels = {row["label"] for row in train}
    if len(labels) < 2:
        raise DatasetError(
            f"{files.train}: every row is labelled {labels.pop()}; KTO needs desirable and "
            "undesirable rows"
        )
    evaluation = (
        load_completion_rows(files.eval, labelled=True, allow_empty=True) if files.eval else []
    )
    return files, train, evaluation


def balanced_weights(
    desirable: int, undesirable: int, desirable_weight: float | None, undesirable_weight: float
) -> tuple[float, float]:
    """(desirable_weight, undesirable_weight) within TRL's advised band for these counts."""
    if desirable_weight is not None:
        return desirable_weight, undesirable_weight
    ratio = max(undesirable, 1) * undesirable_weight / max(desirable, 1)
    return round(ratio * BAND_MIDDLE, 4), undesirable_weight


def kto_config(
    config: TrainConfig,
    *,
    desirable: int,
    undesirable: int,
    on_gpu: bool,
    bf16: bool,
    has_eval: bool,
    gradient_checkpointing: bool,
) -> dict[str, Any]:
    """The keyword arguments of TRL's KTOConfig for these settings and counts (pure)."""
    kto = config.kto
    weight_d, weight_u = balanced_weights(
        desirable, undesirable, kto.desirable_weight, kto.undesirable_weight
    )
    return trainer_arguments(
        config.out,
        kto,
        on_gpu=on_gpu,
        bf16=bf16,
        has_eval=has_eval,
        gradient_checkpointing=gradient_checkpointing,
        tracking=config.tracking,
    ) | {
        "beta": kto.beta,
        "max_length": kto.max_length,
        "desirable_weight": weight_d,
        "undesirable_weight": weight_u,
        "precompute_ref_log_probs": config.reference == "precomputed",
    }


def to_dataset(rows: list[dict[str, Any]]) -> Any:
    """A datasets.Dataset of the rows' KTO columns."""
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
    """TRL's KTOTrainer over the policy (its reference: the adapter disabled) and the rows."""
    from trl import KTOConfig, KTOTrainer

    from agir_retrain.tasks.training.model import precision_flags

    desirable = sum(1 for row in train_rows if row["label"])
    args = KTOConfig(
        **kto_config(
            config,
            desirable=desirable,
            undesirable=len(train_rows) - desirable,
            **precision_flags(),
            has_eval=bool(eval_rows),
            gradient_checkpointing=gradient_checkpointing,
        )
    )
    return KTOTrainer(
        model=model,
        ref_model=None,
        args=args,
        train_dataset=to_dataset(train_rows),
        eval_dataset=to_dataset(eval_rows) if eval_rows else None,
        processing_class=tokenizer,
        peft_config=peft_config,
    )
