"""Loading a resolved base model for sampling, in a dtype chosen on purpose.

transformers 5.x loads a checkpoint in the dtype it was saved in unless told otherwise (a
bf16 folder stays bf16 on the CPU), so the dtype is always passed here, from the
``dtype`` setting of each use (garbling, evaluation, collecting). ``auto`` picks per
device: bfloat16 on a GPU, float32 on the CPU. On this project's CPU (AMD EPYC with
avx512_bf16; docs/benchmarks.md, "Model dtypes") bfloat16 prefilled 2.9x and decoded 1.9x
faster, but its matrix kernels round differently for different batch shapes: the same
prompt and seed gave other text batched than alone (3 of 4), which breaks the
sampler's contract (a sample does not depend on its batch, the actor count, or prefill
sharing). float32 keeps it, so it is the CPU's default; ``bfloat16`` stays a choice.
"""

from __future__ import annotations

import logging
from typing import TYPE_CHECKING, Any, get_args

from agir_retrain.tasks.settings.base import SamplingDtype

if TYPE_CHECKING:
    import torch

log = logging.getLogger(__name__)

SAMPLING_DTYPES: tuple[str, ...] = get_args(SamplingDtype)


def sampling_dtype(choice: SamplingDtype, *, on_gpu: bool) -> torch.dtype:
    """The torch dtype a ``dtype`` setting means on this device (``auto``: see the module)."""
    import torch

    if choice not in SAMPLING_DTYPES:
        raise ValueError(f"dtype={choice!r}: choose one of {', '.join(SAMPLING_DTYPES)}")
    if choice == "auto":
        return torch.bfloat16 if on_gpu else torch.float32
    return getattr(torch, choice)


def load_model(
    model_name: str,
    *,
    gpus: float = 0.0,
    cpus: float = 1.0,
    load_in_4bit: bool = False,
    dtype: SamplingDtype = "auto",
) -> tuple[Any, Any, torch.device]:
    """Load (model, tokenizer, device) for sampling, in ``dtype`` (``sampling_dtype``).

    ``model_name`` is already resolved (``resolve_model``): a folder or a hub id. With
    ``load_in_4bit`` the linear layers are NF4 and compute in ``dtype``.
    """
    import torch
    from transformers import AutoModelForCausalLM, AutoTokenizer

    use_gpu = gpus > 0 and torch.cuda.is_available()
    device = torch.device("cuda" if use_gpu else "cpu")
    if not use_gpu:
        # One process per reserved CPU: more threads only fight the other processes.
        torch.set_num_threads(max(1, int(cpus)))
    weights = sampling_dtype(dtype, on_gpu=use_gpu)
    tokenizer = AutoTokenizer.from_pretrained(model_name)
    load: dict[str, Any] = {"dtype": weights}
    if load_in_4bit:
        from transformers import BitsAndBytesConfig

        load["quantization_config"] = BitsAndBytesConfig(
            load_in_4bit=True,
            bnb_4bit_quant_type="nf4",
            bnb_4bit_use_double_quant=True,
            bnb_4bit_compute_dtype=weights,
        )
        load["device_map"] = {"": device.index or 0} if use_gpu else "cpu"
    model = AutoModelForCausalLM.from_pretrained(model_name, **load)
    if not load_in_4bit:
        model.to(device)
    model.eval()
    log.info("loaded %s for sampling on %s in %s", model_name, device, weights)
    return model, tokenizer, device
