"""Part 3: sampling throughput, the project's batched sampler against ``generate``.

Garbling and evaluation both draw with ``tasks/models/sampler.py``'s ``Sampler`` (seeded
per row, KV cache filled in place); the garbler adds only redraws and fallbacks around
it. It is timed through its public API, ``Sampler.load`` and ``Sampler.sample``, against
transformers' ``generate`` on the same loaded model. Every prompt gets the same number of
new tokens (``min_new_tokens`` = ``max_new_tokens`` for ``generate``; a random model
almost never samples EOS), so the three ways do the same work:
- sampler: batches of ``batch_size`` prompts;
- generate, one at a time: the naive way;
- generate, batched: left-padded batches.
"""

from __future__ import annotations

import random
import time
from pathlib import Path
from typing import Any

from benchmarks.gpu_check.common import Plan, Results, build_model, cuda, peak_gb, release_gpu

BATCH_SIZE = 16  # GarbleSettings.batch_size's default
TEMPERATURE = 1.0


def chat_prompts(tokenizer: Any, count: int, prompt_chars: int) -> list[str]:
    """Rendered chat prompts of about ``prompt_chars`` characters (a listing to garble from)."""
    from agir_retrain.tasks.synth import text

    rng = random.Random(0)
    prompts = []
    for _ in range(count):
        listing = text.listing(rng, 64)
        while len(listing) < prompt_chars:
            listing += "\n" + text.listing(rng, 64)
        messages = [
            {"role": "system", "content": text.SYSTEM_PROMPT},
            {"role": "user", "content": listing[:prompt_chars]},
        ]
        prompts.append(
            tokenizer.apply_chat_template(messages, add_generation_prompt=True, tokenize=False)
        )
    return prompts


def _synchronize() -> None:
    if cuda():
        import torch

        torch.cuda.synchronize()


def _generate_rate(sampler: Any, prompts: list[str], new_tokens: int, batch: int) -> float:
    """Tokens/s of ``generate`` with sampling, ``batch`` prompts a call (left-padded)."""
    import torch

    tokenizer, model = sampler.tokenizer, sampler.model
    kwargs = {"do_sample": True, "temperature": TEMPERATURE, "max_new_tokens": new_tokens,
              "min_new_tokens": new_tokens, "pad_token_id": sampler.pad_id}  # fmt: skip
    made, started = 0, time.perf_counter()
    with torch.inference_mode():
        for i in range(0, len(prompts), batch):
            chunk = prompts[i : i + batch]
            ids = tokenizer(chunk, add_special_tokens=False, padding=True, return_tensors="pt")
            out = model.generate(**ids.to(sampler.device), **kwargs)
            made += (out.shape[1] - ids["input_ids"].shape[1]) * len(chunk)
    _synchronize()
    return made / (time.perf_counter() - started)


def sample_throughput(plan: Plan, model: Path, *, quantize: bool) -> dict[str, Any]:
    """Tokens/s of the sampler, one-at-a-time generate and batched generate, one model load."""
    import torch

    from agir_retrain.tasks.models.sampler import Sampler

    release_gpu()
    sampler = Sampler.load(
        str(model),
        gpus=1.0 if cuda() else 0.0,
        cpus=float(torch.get_num_threads()),
        load_in_4bit=quantize,
        max_prompt_tokens=512,
    )
    prompts = chat_prompts(sampler.tokenizer, plan.sample_requests, prompt_chars=1500)
    budgets = [plan.new_tokens] * len(prompts)
    sampler.sample(prompts[:1], [0], budgets[:1], TEMPERATURE)  # warm-up: kernels, allocator
    _synchronize()
    made, started = 0, time.perf_counter()
    for i in range(0, len(prompts), BATCH_SIZE):
        chunk = prompts[i : i + BATCH_SIZE]
        seeds = list(range(i, i + len(chunk)))
        made += sum(s.new_tokens for s in sampler.sample(chunk, seeds, budgets[: len(chunk)], TEMPERATURE))  # fmt: skip
    _synchronize()
    sampler_rate = made / (time.perf_counter() - started)
    single_rate = _generate_rate(sampler, prompts[: plan.sample_single], plan.new_tokens, 1)
    batched_rate = _generate_rate(sampler, prompts, plan.new_tokens, BATCH_SIZE)
    row = {
        "prompts": len(prompts),
        "batch_size": BATCH_SIZE,
        "new_tokens_per_prompt": plan.new_tokens,
        "sampled_tokens": made,
        "sampler_tokens_per_s": round(sampler_rate, 1),
        "generate_single_tokens_per_s": round(single_rate, 1),
        "generate_single_prompts": plan.sample_single,
        "generate_batched_tokens_per_s": round(batched_rate, 1),
        "sampler_vs_single": round(sampler_rate / single_rate, 2),
        "sampler_vs_generate_batched": round(sampler_rate / batched_rate, 2),
        "peak_gpu_memory_gb": peak_gb(),
    }
    del sampler
    release_gpu()
    return row


def run_sampling(plan: Plan, results: Results) -> None:
    """Sampling throughput with the base in 4-bit and in bf16."""
    model = Path(build_model(plan)["folder"])
    for quantize in (True, False):
        with results.attempt("sampling", quantize=quantize) as row:
            row.update(sample_throughput(plan, model, quantize=quantize))
