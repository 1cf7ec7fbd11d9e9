"""Part 4: FSDP-QLoRA through ``accelerate launch`` writes an adapter, which reloads.

One process is enough to prove the save path (FSDP gathers the sharded LoRA weights into
a plain adapter file); the model has the plan's widths but few layers, to be quick. On
a machine without a GPU accelerate ignores FSDP, so the smoke run proves only the launch,
the save and the reload.
"""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
import time
from importlib.resources import files
from pathlib import Path
from typing import Any

from benchmarks.gpu_check.common import (
    ROOT,
    Plan,
    Results,
    build_model,
    cuda,
    release_gpu,
    write_dpo_data,
)


def accelerate_config() -> str:
    """FSDP-QLoRA where there is a GPU; accelerate refuses FSDP without one (1.15), so single_gpu."""
    return "fsdp_qlora.yaml" if cuda() else "single_gpu.yaml"


def fsdp_train(plan: Plan, model: Path, out: Path, log: Path) -> float:
    """Launch the training program under the FSDP-QLoRA config with one process."""
    config = files("agir_retrain.container") / "accelerate" / accelerate_config()
    data = write_dpo_data(plan, 512, rows=3)
    shutil.rmtree(out, ignore_errors=True)
    command = [
        sys.executable, "-m", "accelerate.commands.launch", "--config_file", str(config),
        "--num_processes", "1", "--main_process_port", "29517",
        "-m", "agir_retrain.tasks.training", "--set", f"dataset={data}",
        "--set", f"base_model={model}", "--set", f"out={out}",
        "--set", "dpo.max_steps=2", "--set", "dpo.batch_size=1",
        "--set", "dpo.gradient_accumulation=1", "--set", "dpo.max_length=512",
        "--set", "dpo.save_steps=1000000",
    ]  # fmt: skip
    started = time.perf_counter()
    with log.open("w") as handle:
        done = subprocess.run(
            command, cwd=ROOT, stdout=handle, stderr=subprocess.STDOUT, env=os.environ.copy(),
            check=False,
        )  # fmt: skip
    if done.returncode != 0:
        tail = log.read_text(errors="replace").strip().splitlines()[-3:]
        raise RuntimeError(f"accelerate launch exited {done.returncode}: {' | '.join(tail)}")
    return time.perf_counter() - started


def reload_adapter(model: Path, out: Path) -> dict[str, Any]:
    """Reload the adapter onto the 4-bit base; its LoRA weights must equal the saved ones."""
    import torch
    from safetensors.torch import load_file

    from agir_retrain.tasks.training.model import load_adapter

    saved = load_file(str(out / "adapter_model.safetensors"))
    loaded = load_adapter(str(model), out, quantize=True)
    params = {n: p for n, p in loaded.named_parameters() if "lora_" in n}
    matched = 0
    for key, tensor in saved.items():
        name = next((n for n in params if n.replace(".default", "").endswith(key.removeprefix("base_model.model."))), None)  # fmt: skip
        if name is None:
            raise ValueError(f"saved tensor {key} has no LoRA parameter in the reloaded model")
        if not torch.equal(params[name].detach().cpu().to(tensor.dtype), tensor):
            raise ValueError(f"reloaded {name} differs from the saved {key}")
        matched += 1
    trained = sum(1 for k, t in saved.items() if "lora_B" in k and bool(t.abs().sum() > 0))
    if not trained:
        raise ValueError("every saved lora_B is zero: the steps did not update the adapter")
    device = next(loaded.parameters()).device
    with torch.inference_mode():
        logits = loaded(input_ids=torch.tensor([[1, 2, 3, 4]], device=device)).logits
    finite = bool(torch.isfinite(logits).all())
    del loaded
    release_gpu()
    return {
        "adapter_tensors": len(saved),
        "tensors_equal_after_reload": matched,
        "lora_b_nonzero": trained,
        "adapter_mb": round((out / "adapter_model.safetensors").stat().st_size / 2**20, 2),
        "reloaded_logits_finite": finite,
    }


def run_fsdp(plan: Plan, results: Results, logs: Path) -> None:
    """Train two steps under FSDP-QLoRA with one process, then reload the adapter."""
    model = Path(build_model(plan, short=True)["folder"])
    out = Path(plan.work) / "runs" / "fsdp-qlora"
    with results.attempt("fsdp_qlora", layers=plan.short_layers) as row:
        row["accelerate_config"] = accelerate_config()
        row["train_s"] = round(fsdp_train(plan, model, out, logs / "fsdp_qlora-launch.log"), 1)
        row.update(reload_adapter(model, out))
