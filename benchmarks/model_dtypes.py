"""Benchmark float32 against bfloat16 on this CPU, for sampling and for training, on the real model.

    python -m benchmarks.model_dtypes --model builtin:smollm2-135m

Which dtype each use loads a model in is a setting (``dtype``: sampling's in garbling and
evaluation, ``tasks/models/loading.py``); this measures what its default should be here.
- sampling, one thread (a sampling actor reserves one CPU), a batch of ``--batch`` AGIR-like
  code prompts (~300-400 tokens, left-padded) through the project's ``Sampler``: prefill
  (the prompt's pass) and decode (tokens/s of the steps after it), float32 weights against
  bfloat16 weights; and whether 4 prompts sampled together give the texts each gives alone
  (the sampler's contract);
- training, every core: a LoRA step (rank 16 on every linear layer, gradient checkpointing,
  AdamW on the adapter, as ``train --objective sft`` on the CPU) on ``--train-batch``
  sequences of ``--train-tokens`` tokens: float32 (what the CPU trains in today), float32
  weights under bf16 autocast (what ``bf16=True`` gives on the CPU), and bf16 weights under
  autocast (adapter in float32).

Rounds alternate the variants so other load hits each alike; medians and ratios against
float32 are printed with the load average and written to bench-out/model_dtypes.json.
"""

from __future__ import annotations

import argparse
import contextlib
import json
import os
import statistics
import time
from pathlib import Path
from typing import Any

from benchmarks.sampler_speed import agir_code_prompts

os.environ.setdefault("HF_HUB_OFFLINE", "1")

OUT = Path(__file__).resolve().parent.parent / "bench-out"


def sampling(folder: str, batch: int, new_tokens: int, rounds: int) -> dict[str, Any]:
    """Prefill seconds and decode tokens/s of each dtype, one thread, alternating rounds.

    Each ``sample`` call is timed from inside by hooks on the model: the prefill is the first
    forward pass, the decode is everything from its end to the end of the last pass (the
    steps and the draws between them), so both come from the same call under the same load.
    """
    from agir_retrain.tasks.models.sampler import Sampler

    samplers = {
        dtype: Sampler.load(folder, cpus=1, dtype=dtype, max_prompt_tokens=1536)
        for dtype in ("float32", "bfloat16")
    }
    prompts = agir_code_prompts(samplers["float32"].tokenizer, batch)
    marks: list[float] = []  # start of the first pass, then the end of every pass
    for sampler in samplers.values():
        sampler.eos_id = -1  # every row runs its whole budget
        sampler.model.register_forward_pre_hook(
            lambda *_: marks.append(time.perf_counter()) if not marks else None
        )
        sampler.model.register_forward_hook(lambda *_: marks.append(time.perf_counter()))
        sampler.sample(prompts[:1], [0], [2], 1.0)  # warm-up
    timings: dict[str, dict[str, list[float]]] = {
        d: {"prefill_s": [], "decode_tokens_per_s": []} for d in samplers
    }
    for round_ in range(rounds):
        for dtype, sampler in samplers.items():
            marks.clear()
            seeds = [round_ * batch + i for i in range(batch)]
            sampler.sample(prompts, seeds, [1 + new_tokens] * batch, 1.0)
            assert len(marks) == 2 + new_tokens  # the start, the prefill's end, one per step
            timings[dtype]["prefill_s"].append(marks[1] - marks[0])
            timings[dtype]["decode_tokens_per_s"].append(
                batch * new_tokens / (marks[-1] - marks[1])
            )
    result: dict[str, Any] = {
        dtype: {name: round(statistics.median(values), 2) for name, values in times.items()}
        for dtype, times in timings.items()
    }
    for dtype, sampler in samplers.items():
        # The sampler's contract: a prompt's sample does not depend on its batch.
        seeds, budgets = list(range(4)), [12] * 4
        together = sampler.sample(prompts[:4], seeds, budgets, 1.0)
        alone = [
            sampler.sample([p], [s], [12], 1.0)[0] for p, s in zip(prompts[:4], seeds, strict=True)
        ]
        result[dtype]["same_sample_batched_as_alone"] = (
            f"{sum(a == b for a, b in zip(together, alone, strict=True))}/4"
        )
    result["bf16_vs_fp32"] = {
        "prefill_speedup": round(
            result["float32"]["prefill_s"] / result["bfloat16"]["prefill_s"], 2
        ),
        "decode_speedup": round(
            result["bfloat16"]["decode_tokens_per_s"] / result["float32"]["decode_tokens_per_s"], 2
        ),
    }
    del samplers
    return result


def _lora_model(folder: str, weights: Any) -> Any:
    import torch
    from peft import LoraConfig, get_peft_model
    from transformers import AutoModelForCausalLM

    torch.manual_seed(0)
    base = AutoModelForCausalLM.from_pretrained(folder, dtype=weights)
    base.config.use_cache = False
    base.gradient_checkpointing_enable(gradient_checkpointing_kwargs={"use_reentrant": False})
    base.enable_input_require_grads()
    targets = ["q_proj", "k_proj", "v_proj", "o_proj", "gate_proj", "up_proj", "down_proj"]
    config = LoraConfig(r=16, lora_alpha=32, target_modules=targets, task_type="CAUSAL_LM")
    return get_peft_model(base, config)  # the adapter is float32 whatever the base (peft 0.21)


def training(folder: str, batch: int, tokens: int, steps: int, rounds: int) -> dict[str, Any]:
    """Seconds per LoRA step of each variant, every core, alternating rounds."""
    import torch

    torch.set_num_threads(os.cpu_count() or 1)
    models = {
        "float32": (_lora_model(folder, torch.float32), False),
        "float32+bf16_autocast": (None, True),  # shares the float32 model
        "bfloat16+bf16_autocast": (_lora_model(folder, torch.bfloat16), True),
    }
    generator = torch.Generator().manual_seed(0)
    vocab = models["float32"][0].config.vocab_size
    ids = torch.randint(0, vocab, (batch, tokens), generator=generator)
    per_step: dict[str, list[float]] = {name: [] for name in models}
    losses: dict[str, float] = {}
    for round_ in range(rounds + 1):  # round 0 warms up
        for name, (model, autocast) in models.items():
            model = model if model is not None else models["float32"][0]
            params = [p for p in model.parameters() if p.requires_grad]
            optimizer = torch.optim.AdamW(params, lr=1e-4)
            cast = (
                torch.autocast("cpu", dtype=torch.bfloat16)
                if autocast
                else contextlib.nullcontext()
            )
            for _ in range(1 if round_ == 0 else steps):
                started = time.perf_counter()
                with cast:
                    loss = model(input_ids=ids, labels=ids).loss
                loss.backward()
                optimizer.step()
                optimizer.zero_grad()
                if round_:
                    per_step[name].append(time.perf_counter() - started)
                losses[name] = round(float(loss.detach()), 3)
    result: dict[str, Any] = {
        name: {
            "s_per_step": round(statistics.median(times), 2),
            "tokens_per_s": round(batch * tokens / statistics.median(times), 1),
            "last_loss": losses[name],
        }
        for name, times in per_step.items()
    }
    for name in list(result):
        result[name]["vs_float32"] = round(
            result["float32"]["s_per_step"] / result[name]["s_per_step"], 2
        )
    return result


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--model", default="builtin:smollm2-135m")
    parser.add_argument("--batch", type=int, default=8, help="sampling rows")
    parser.add_argument("--new-tokens", type=int, default=32, help="decode steps timed")
    parser.add_argument("--train-batch", type=int, default=2)
    parser.add_argument("--train-tokens", type=int, default=256)
    parser.add_argument("--train-steps", type=int, default=2, help="timed steps per round")
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--skip", choices=["sampling", "training"], default=None)
    args = parser.parse_args()

    from agir_retrain.tasks.models.resolve import resolve_model

    folder = resolve_model(args.model)
    load_before = os.getloadavg()[0]
    result: dict[str, Any] = {"model": args.model, "cpus": os.cpu_count()}
    if args.skip != "sampling":
        result[f"sampling_1_thread_batch_{args.batch}"] = sampling(
            folder, args.batch, args.new_tokens, args.rounds
        )
    if args.skip != "training":
        result[f"training_lora_{args.train_batch}x{args.train_tokens}"] = training(
            folder, args.train_batch, args.train_tokens, args.train_steps, args.rounds
        )
    result["load_average_1m"] = {
        "before": round(load_before, 2),
        "after": round(os.getloadavg()[0], 2),
    }
    OUT.mkdir(exist_ok=True)
    (OUT / "model_dtypes.json").write_text(json.dumps(result, indent=2) + "\n")
    print(json.dumps(result, indent=2))


if __name__ == "__main__":
    main()
