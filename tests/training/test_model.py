"""Saving under FSDP: the final save gathers the adapter (FSDP itself needs GPUs)."""

from __future__ import annotations

import pytest
import yaml

from agir_retrain.tasks.delivery.package_data import accelerate_configs_dir
from agir_retrain.tasks.filenames import ADAPTER_FILE
from agir_retrain.tasks.training.model import final_save_state_dict_type


def _fsdp_plugin():
    """The FSDP plugin `accelerate launch --config_file fsdp_qlora.yaml` gives the Trainer."""
    from accelerate.utils import FullyShardedDataParallelPlugin

    fsdp = yaml.safe_load((accelerate_configs_dir() / "fsdp_qlora.yaml").read_text())["fsdp_config"]
    return FullyShardedDataParallelPlugin(
        fsdp_version=fsdp["fsdp_version"], state_dict_type=fsdp["fsdp_state_dict_type"]
    )


def test_checkpoints_are_sharded_and_the_final_save_is_full():
    plugin = _fsdp_plugin()
    assert plugin.state_dict_type.name == "SHARDED_STATE_DICT"  # cheap checkpoints to resume from
    assert final_save_state_dict_type(plugin) == "FULL_STATE_DICT"
    assert type(plugin.state_dict_config).__name__ == "FullStateDictConfig"
    assert plugin.state_dict_config.rank0_only  # gathered once, on the rank that writes


@pytest.mark.slow
def test_a_save_under_fsdp_writes_the_adapter(dataset, tiny_model, tmp_path, monkeypatch):
    from safetensors.torch import load_file

    from agir_retrain.tasks.settings.models import TrainConfig
    from agir_retrain.tasks.training.dpo import DpoSettings
    from agir_retrain.tasks.training.model import save_adapter
    from agir_retrain.tasks.training.program import prepare

    config = TrainConfig(
        dataset=str(dataset),
        base_model=tiny_model,
        out=str(tmp_path / "out"),
        dpo=DpoSettings(max_steps=1, max_length=512),
    )
    trainer = prepare(config).trainer
    # On GPUs, accelerate puts this plugin in its shared state and the Trainer sees FSDP on;
    # the CPU ignores FSDP, so both are set here as that launch sets them.
    monkeypatch.setattr(trainer.accelerator.state, "fsdp_plugin", _fsdp_plugin(), raising=False)
    monkeypatch.setattr(trainer, "is_fsdp_enabled", True)

    trainer.save_model(str(tmp_path / "as-configured"))
    assert not (tmp_path / "as-configured" / ADAPTER_FILE).exists()  # the bug: nothing saved

    save_adapter(trainer, tmp_path / "final")
    saved = load_file(tmp_path / "final" / ADAPTER_FILE)
    lora = {n for n, _ in trainer.model.named_parameters() if "lora_" in n}
    assert len(saved) == len(lora) > 0  # every LoRA matrix, and nothing of the base
