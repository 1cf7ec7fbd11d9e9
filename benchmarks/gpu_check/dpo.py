"""Parts 1 and 2: DPO steps through the training program, per reference mode and length.

Each run calls the program's public ``prepare`` (data fitted, base loaded, LoRA, the
reference) and then trains a few steps; the adapter is not saved (part 4 proves saving).
Peak memory is ``torch.cuda.max_memory_allocated`` from before the base is loaded to
after the last step, less what was still allocated before (the ratios use that); tokens/s counts TRL's ``num_tokens`` over the steps after the first
(the first holds one-off CUDA and allocator warm-up).
"""

from __future__ import annotations

import shutil
import time
from pathlib import Path
from typing import Any

from benchmarks.gpu_check.common import (
    Plan,
    Results,
    build_model,
    peak_gb,
    release_gpu,
    write_dpo_data,
)


def step_timer() -> Any:
    """A trainer callback that notes when each optimizer step ends."""
    from transformers import TrainerCallback

    class StepTimer(TrainerCallback):
        def __init__(self) -> None:
            self.ends: dict[int, float] = {}

        def on_step_end(self, args: Any, state: Any, control: Any, **kwargs: Any) -> None:
            from benchmarks.gpu_check.common import cuda

            if cuda():
                import torch

                torch.cuda.synchronize()
            self.ends[state.global_step] = time.perf_counter()

    return StepTimer()


def tokens_per_s(log_history: list[dict[str, Any]], ends: dict[int, float]) -> tuple[float, int]:
    """Tokens/s over the steps after the first, from TRL's cumulative ``num_tokens``."""
    tokens = {row["step"]: row["num_tokens"] for row in log_history if "num_tokens" in row}
    steps = sorted(step for step in tokens if step in ends)
    if len(steps) < 2:
        raise ValueError(f"need two logged steps with num_tokens to time, got {steps}")
    first, last = steps[0], steps[-1]
    return round((tokens[last] - tokens[first]) / (ends[last] - ends[first]), 1), int(tokens[last])


def train_once(
    plan: Plan, model: Path, *, quantize: bool, mode: str, max_length: int
) -> dict[str, Any]:
    """Train ``plan.steps`` DPO steps in one reference mode; peak memory and tokens/s."""
    from agir_retrain.tasks.settings.models import TrainConfig
    from agir_retrain.tasks.training.dpo import DpoSettings
    from agir_retrain.tasks.training.program import prepare

    data = write_dpo_data(plan, max_length, rows=plan.steps + 1)
    out = Path(plan.work) / "runs" / f"dpo-{'4bit' if quantize else 'bf16'}-{mode}-{max_length}"
    shutil.rmtree(out, ignore_errors=True)
    config = TrainConfig(
        dataset=str(data),
        base_model=str(model),
        out=str(out),
        quantize=quantize,
        dpo=DpoSettings(
            reference=mode,
            max_steps=plan.steps,
            batch_size=1,
            gradient_accumulation=1,
            max_length=max_length,
            logging_steps=1,
            save_steps=1_000_000,  # no checkpoint: part 4 proves saving
        ),
    )
    before = release_gpu()
    started = time.perf_counter()
    prepared = prepare(config)
    loaded_s = time.perf_counter() - started
    timer = step_timer()
    prepared.trainer.add_callback(timer)
    output = prepared.trainer.train()
    rate, tokens = tokens_per_s(prepared.trainer.state.log_history, timer.ends)
    peak = peak_gb()
    row = {
        "peak_gpu_memory_gb": peak,
        # What an earlier run of this process left allocated (should be ~0) is not this run's.
        "allocated_before_gb": before,
        "run_peak_gpu_memory_gb": None if peak is None else round(peak - (before or 0.0), 3),
        "tokens_per_s": rate,
        "tokens": tokens,
        "steps": prepared.trainer.state.global_step,
        "train_loss": round(float(output.training_loss), 4),
        "rows": len(prepared.trainer.train_dataset),
        "prepare_s": round(loaded_s, 1),
    }
    del prepared, output
    release_gpu()
    shutil.rmtree(out, ignore_errors=True)
    return row


def run_dpo(plan: Plan, results: Results, *, quantize: bool) -> None:
    """Every (length, mode) of the plan, 4-bit (part 1) or bf16 LoRA (part 2)."""
    with results.attempt("model") as row:
        row.update(build_model(plan))
    model = Path(row["folder"])
    modes = plan.modes if quantize else plan.bf16_modes
    for max_length in plan.lengths:
        for mode in modes:
            with results.attempt("dpo", quantize=quantize, mode=mode, max_length=max_length) as row:
                row.update(
                    train_once(plan, model, quantize=quantize, mode=mode, max_length=max_length)
                )
