"""DPO: what is DPO's own. TRL's DPOConfig from our settings, the reference, the trainer, its curves.

The reference is the base with the adapter disabled (``adapter``, no second copy), a
second 4-bit copy of the base (``separate``, as the seed did), or log-probabilities
computed once before training (``precomputed``).
"""

from __future__ import annotations

from typing import Any

from agir_retrain.tasks.settings.models import TrainConfig
from agir_retrain.tasks.training.arguments import trainer_arguments
from agir_retrain.tasks.training.data import DataFiles, locate
from agir_retrain.tasks.training.outputs import Curve

NAME = "dpo"
COLUMNS = ("prompt", "chosen", "rejected")
CURVES = (
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


def data_files(config: TrainConfig) -> DataFiles:
    """The preference file (``dpo/train.jsonl``, ``train.jsonl`` or one file) and its eval file."""
    return locate(config.dataset, config.eval_dataset)


def dpo_config(
    config: TrainConfig,
    *,
    on_gpu: bool,
    bf16: bool,
    has_eval: bool,
    gradient_checkpointing: bool,
) -> dict[str, Any]:
    """The keyword arguments of TRL's DPOConfig for these settings (pure: no torch, no TRL)."""
    dpo = config.dpo
    return trainer_arguments(
        config.out,
        dpo,
        on_gpu=on_gpu,
        bf16=bf16,
        has_eval=has_eval,
        gradient_checkpointing=gradient_checkpointing,
        tracking=config.tracking,
    ) | {
        "beta": dpo.beta,
        "max_length": dpo.max_length,
        "truncation_mode": dpo.truncation_mode,
        "loss_type": list(dpo.loss_types),
        "loss_weights": list(dpo.loss_weights) if dpo.loss_weights is not None else None,
        "precompute_ref_log_probs": config.reference == "precomputed",
    }


def to_dataset(rows: list[dict[str, Any]]) -> Any:
    """A datasets.Dataset of the rows' DPO columns (provenance and ids left out)."""
    from datasets import Dataset

    return Dataset.from_list([{key: row[key] for key in COLUMNS} for row in rows])


def reference_model(config: TrainConfig, base: str) -> Any | None:
    """A second copy of the base for ``reference=separate``; None otherwise.

    None with a peft policy makes TRL disable the adapter for the reference forward
    (``adapter``) or compute the reference log-probabilities once up front (``precomputed``).
    """
    if config.reference != "separate":
        return None
    from agir_retrain.tasks.training.model import load_base

    return load_base(base, quantize=config.quantize, trust_remote_code=config.trust_remote_code)


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
    """TRL's DPOTrainer over the policy, its reference and the fitted rows."""
    from trl import DPOConfig, DPOTrainer

    from agir_retrain.tasks.training.model import precision_flags

    args = DPOConfig(
        **dpo_config(
            config,
            **precision_flags(),
            has_eval=bool(eval_rows),
            gradient_checkpointing=gradient_checkpointing,
        )
    )
    return DPOTrainer(
        model=model,
        ref_model=reference_model(config, base),
        args=args,
        train_dataset=to_dataset(train_rows),
        eval_dataset=to_dataset(eval_rows) if eval_rows else None,
        processing_class=tokenizer,
        peft_config=peft_config,
    )
