"""The base model for training: 4-bit loading, LoRA layer detection, parameter counts, merging.

The seed's training script "uses 4-bit quantization for memory efficiency, implements
LoRA, handles both the main model and a reference model, and includes utility
functions for parameter management and layer detection": these are those utilities.
"""

from __future__ import annotations

import logging
import os
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch

from agir_retrain.tasks.filenames import ADAPTER_FILE

log = logging.getLogger(__name__)

# Linear layer classes LoRA can adapt, by name: torch's and bitsandbytes' 4- and 8-bit ones.
LINEAR_CLASSES = frozenset({"Linear", "Linear4bit", "Linear8bitLt"})


@dataclass(frozen=True, slots=True, kw_only=True)
class ParameterCounts:
    """Trainable and total parameters (4-bit weights counted at their unpacked size)."""

    trainable: int
    total: int

    @property
    def trainable_percent(self) -> float:
        """Trainable share of all parameters, in percent."""
        return 100.0 * self.trainable / max(1, self.total)


def use_fsdp() -> bool:
    """Whether this process was launched by accelerate with FSDP."""
    return os.environ.get("ACCELERATE_USE_FSDP", "false").lower() == "true"


def compute_dtype(setting: str = "auto") -> torch.dtype:
    """The ``dtype`` setting as a torch dtype: auto is bf16 on GPUs that support it, else fp32."""
    if setting == "bfloat16":
        return torch.bfloat16
    if setting == "float32":
        return torch.float32
    if torch.cuda.is_available() and torch.cuda.is_bf16_supported():
        return torch.bfloat16
    return torch.float32


def precision_flags(setting: str = "auto") -> dict[str, bool]:
    """The Trainer's device keywords every objective's config takes: ``on_gpu`` and ``bf16``.

    ``bf16`` on the CPU is torch's CPU autocast (``use_cpu`` with ``bf16``).
    """
    return {"on_gpu": torch.cuda.is_available(), "bf16": compute_dtype(setting) == torch.bfloat16}


def device_map() -> dict[str, Any] | None:
    """Each process loads onto its own device; FSDP places the shards itself."""
    if use_fsdp():
        return None
    if torch.cuda.is_available():
        return {"": int(os.environ.get("LOCAL_RANK", 0))}
    return {"": "cpu"}


def quantization_config(setting: str = "auto") -> Any:
    """4-bit NF4 with double quantization; under FSDP, stored in the compute dtype to shard."""
    from transformers import BitsAndBytesConfig

    dtype = compute_dtype(setting)
    extra = {"bnb_4bit_quant_storage": dtype} if use_fsdp() else {}
    return BitsAndBytesConfig(
        load_in_4bit=True,
        bnb_4bit_quant_type="nf4",
        bnb_4bit_use_double_quant=True,
        bnb_4bit_compute_dtype=dtype,
        **extra,
    )


def load_base(
    name: str, *, quantize: bool, trust_remote_code: bool = False, dtype: str = "auto"
) -> Any:
    """Load the base causal LM, in 4-bit or in the compute dtype, on this process's device."""
    from transformers import AutoModelForCausalLM

    kwargs: dict[str, Any] = {"dtype": compute_dtype(dtype), "trust_remote_code": trust_remote_code}
    if quantize:
        kwargs["quantization_config"] = quantization_config(dtype)
    placement = device_map()
    if placement is not None:
        kwargs["device_map"] = placement
    model = AutoModelForCausalLM.from_pretrained(name, **kwargs)
    model.config.use_cache = False  # the KV cache only costs memory while training
    if quantize:
        keep_cpu_4bit_in_compute_dtype(model)
    return model


def keep_cpu_4bit_in_compute_dtype(model: Any) -> int:
    """Make every 4-bit layer compute on the CPU as in training; return how many were set.

    bitsandbytes 0.50.2, on CPUs with avx512_bf16 only, switches a ``Linear4bit`` in eval
    mode with no gradient to a fused kernel: the fp32 input is rounded to bf16 (2^-8
    relative), the weight is repacked and its double-quantized scales are decoded to bf16,
    and saving packs them back by quantizing the scales again (lossy). So on those CPUs
    evaluation computed in another precision than training, a model that was evaluated
    and saved held slightly different scales than a fresh load (logits -0.2284 against
    -0.2277), and that kernel asserts that every output width is a multiple of 32. Off,
    every CPU dequantizes and multiplies in the compute dtype (fp32), as training does.
    GPUs never take that path. Remove when bitsandbytes makes the kernel opt-in.
    """
    count = 0
    for module in model.modules():
        if hasattr(module, "support_avx512bf16_for_cpu"):
            module.support_avx512bf16_for_cpu = False
            count += 1
    return count


def lora_config(settings: Any, targets: list[str]) -> Any:
    """peft's LoraConfig from our LoRA settings and the layers to adapt."""
    from peft import LoraConfig

    return LoraConfig(
        r=settings.r,
        lora_alpha=settings.alpha,
        lora_dropout=settings.dropout,
        target_modules=targets,
        task_type="CAUSAL_LM",
    )


def load_policy(
    name: str,
    *,
    quantize: bool,
    gradient_checkpointing: bool,
    trust_remote_code: bool = False,
    dtype: str = "auto",
) -> tuple[Any, bool]:
    """Load the base to train on, prepared for k-bit training where it is 4-bit.

    Returns the model and whether the trainer still has to turn on gradient checkpointing
    (``prepare_model_for_kbit_training`` does it itself; FSDP shards weights as they are).
    """
    from peft import prepare_model_for_kbit_training

    model = load_base(name, quantize=quantize, trust_remote_code=trust_remote_code, dtype=dtype)
    if quantize and not use_fsdp():
        model = prepare_model_for_kbit_training(
            model,
            use_gradient_checkpointing=gradient_checkpointing,
            gradient_checkpointing_kwargs={"use_reentrant": False},
        )
        return model, False
    return model, gradient_checkpointing


def save_adapter(trainer: Any, out: str | Path) -> None:
    """Save the trained adapter (and tokenizer) to ``out``, also under FSDP.

    transformers 5.23's ``Trainer.save_model`` writes weights under FSDP only when the
    plugin's state dict type is FULL_STATE_DICT, and ``fsdp_qlora.yaml`` shards
    checkpoints (SHARDED_STATE_DICT, cheap to write and to resume from). So the final
    save switches to FULL_STATE_DICT, as peft's FSDP-QLoRA example does: the adapter is
    gathered on rank 0 and written as ``adapter_model.safetensors``.
    """
    if getattr(trainer, "is_fsdp_enabled", False):
        final_save_state_dict_type(trainer.accelerator.state.fsdp_plugin)
    trainer.save_model(str(out))
    if trainer.is_world_process_zero() and not (Path(out) / ADAPTER_FILE).is_file():
        raise RuntimeError(f"{out}: the trainer saved no {ADAPTER_FILE}")


def final_save_state_dict_type(plugin: Any) -> str:
    """Switch an FSDP plugin to FULL_STATE_DICT for the final save; return the type's name."""
    # accelerate 1.15 keeps configs already set, so the sharded ones are dropped first:
    # gathered to rank 0, offloaded to the CPU.
    plugin.state_dict_config = plugin.optim_state_dict_config = None
    plugin.set_state_dict_type("FULL_STATE_DICT")
    return plugin.state_dict_type.name


def lora_targets(model: Any) -> list[str]:
    """Names of every linear (or 4-bit linear) layer except the output head, deduplicated.

    LoRA matches these against module name suffixes, so ``q_proj`` adapts it in every block.
    """
    output = model.get_output_embeddings()
    names, head = set(), set()
    for name, module in model.named_modules():
        if module is output:
            head.add(name.rsplit(".", 1)[-1])
        elif name and type(module).__name__ in LINEAR_CLASSES:
            names.add(name.rsplit(".", 1)[-1])
    targets = sorted(names - head)
    if not targets:
        raise ValueError(f"{type(model).__name__} has no linear layers for LoRA to adapt")
    return targets


def parameter_counts(model: Any) -> ParameterCounts:
    """Count trainable and total parameters; packed 4-bit weights count as unpacked."""
    trainable = total = 0
    for parameter in model.parameters():
        count = parameter.numel()
        if type(parameter).__name__ == "Params4bit":  # two 4-bit values per stored byte
            count *= 2 * (parameter.element_size() if parameter.dtype != torch.uint8 else 1)
        total += count
        if parameter.requires_grad:
            trainable += count
    return ParameterCounts(trainable=trainable, total=total)


def load_adapter(
    base_name: str, adapter_dir: str | Path, *, quantize: bool, trust_remote_code: bool = False
) -> Any:
    """Load a trained adapter onto its base, computing as it did in training.

    TRL (1.16) trains QLoRA adapter weights in bf16 and saves them so, while peft creates
    the LoRA layers in the base layer's dtype (fp32 on the CPU) and copies the saved values
    in: the reloaded model would compute in another precision, and its logits move by
    ~1e-4. The LoRA parameters are given back the dtype they were saved in.
    """
    from peft import PeftModel
    from safetensors import safe_open

    base = load_base(base_name, quantize=quantize, trust_remote_code=trust_remote_code)
    model = PeftModel.from_pretrained(base, str(adapter_dir)).eval()
    with safe_open(str(Path(adapter_dir) / ADAPTER_FILE), "pt") as saved:
        dtypes = {saved.get_tensor(key).dtype for key in saved.keys()}
    if len(dtypes) == 1:
        (dtype,) = dtypes
        for name, parameter in model.named_parameters():
            if "lora_" in name:
                parameter.data = parameter.data.to(dtype)
    return model


def merge_adapter(
    base_name: str,
    adapter_dir: str | Path,
    target: str | Path,
    *,
    trust_remote_code: bool = False,
    dtype: str = "auto",
) -> Path:
    """Merge the adapter into a full-precision copy of the base (never into 4-bit weights)."""
    from peft import PeftModel
    from transformers import AutoModelForCausalLM, AutoTokenizer

    base = AutoModelForCausalLM.from_pretrained(
        base_name,
        dtype=compute_dtype(dtype),
        device_map={"": "cpu"},
        trust_remote_code=trust_remote_code,
    )
    merged = PeftModel.from_pretrained(base, str(adapter_dir)).merge_and_unload()
    target = Path(target)
    merged.save_pretrained(target)
    AutoTokenizer.from_pretrained(str(adapter_dir)).save_pretrained(target)
    log.info("merged adapter into a full-precision copy of %s at %s", base_name, target)
    return target
