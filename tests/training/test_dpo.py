"""DPO's own part: the mapping from our settings to TRL's DPOConfig."""

from __future__ import annotations

import pytest

from agir_retrain.tasks.settings.models import TrainConfig
from agir_retrain.tasks.training.dpo import OBJECTIVE, DpoSettings

SETTINGS = TrainConfig(
    out="adapter-out",
    dpo=DpoSettings(
        reference="precomputed",
        beta=0.2,
        learning_rate=1e-4,
        epochs=2.0,
        batch_size=3,
        gradient_accumulation=4,
        max_length=1024,
        loss_types=["sigmoid", "sft"],
        loss_weights=[1.0, 0.3],
        seed=7,
        logging_steps=5,
        eval_steps=20,
        save_steps=40,
        save_total_limit=3,
    ),
)


def test_settings_map_to_dpo_config_fields():
    assert OBJECTIVE.trl_config(
        SETTINGS, on_gpu=True, bf16=True, has_eval=True, gradient_checkpointing=False
    ) == {
        "output_dir": "adapter-out",
        "learning_rate": 1e-4,
        "num_train_epochs": 2.0,
        "max_steps": -1,  # no max_steps: train for the epochs
        "per_device_train_batch_size": 3,
        "per_device_eval_batch_size": 3,
        "gradient_accumulation_steps": 4,
        "gradient_checkpointing": False,
        "gradient_checkpointing_kwargs": {"use_reentrant": False},
        "seed": 7,
        "data_seed": 7,
        "logging_steps": 5,
        "eval_strategy": "steps",
        "eval_steps": 20,
        "save_strategy": "steps",
        "save_steps": 40,
        "save_total_limit": 3,
        "report_to": "none",
        "use_cpu": False,
        "bf16": True,
        "ddp_find_unused_parameters": False,
        "beta": 0.2,
        "max_length": 1024,
        "truncation_mode": "keep_start",
        "loss_type": ["sigmoid", "sft"],
        "loss_weights": [1.0, 0.3],
        "precompute_ref_log_probs": True,
    }


@pytest.mark.parametrize(
    ("reference", "precompute"), [("adapter", False), ("separate", False), ("precomputed", True)]
)
def test_reference_mode(reference, precompute):
    config = SETTINGS.model_copy(
        update={"dpo": SETTINGS.dpo.model_copy(update={"reference": reference})}
    )
    kwargs = OBJECTIVE.trl_config(
        config, on_gpu=False, bf16=False, has_eval=True, gradient_checkpointing=True
    )
    assert kwargs["precompute_ref_log_probs"] is precompute


def test_cpu_and_no_eval_file():
    config = SETTINGS.model_copy(
        update={"dpo": SETTINGS.dpo.model_copy(update={"max_steps": 10, "loss_weights": None})}
    )
    kwargs = OBJECTIVE.trl_config(
        config, on_gpu=False, bf16=False, has_eval=False, gradient_checkpointing=True
    )
    assert (kwargs["use_cpu"], kwargs["bf16"], kwargs["eval_strategy"]) == (True, False, "no")
    assert (kwargs["max_steps"], kwargs["loss_weights"]) == (10, None)


def test_trl_accepts_the_mapping():
    from trl import DPOConfig

    kwargs = OBJECTIVE.trl_config(
        SETTINGS, on_gpu=False, bf16=False, has_eval=True, gradient_checkpointing=True
    )
    args = DPOConfig(**kwargs)
    assert (args.beta, args.max_length, args.loss_type) == (0.2, 1024, ["sigmoid", "sft"])
    assert args.precompute_ref_log_probs


def test_the_old_top_level_reference_says_where_it_moved():
    from pydantic import ValidationError

    with pytest.raises(ValidationError, match=r"reference\n.*moved into the objective's section"):
        TrainConfig(reference="separate")
