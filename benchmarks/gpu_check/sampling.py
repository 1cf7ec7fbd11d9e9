"""Part 3: sampling throughput, the garbler's batched sampler against ``generate``.

The garbler (``tasks/dataset/garble.py``) is driven through its public API: ``Garbler``
and ``garble`` on batches from ``plan_batches``. Every request is given the same number of
new tokens (floor = cap), so the three ways do the same work:
- garbler: batched, per-row seeded sampling with a KV cache (garbling);
- generate, one at a time: ``model.generate(do_sample=True)`` per request (the naive way);
- generate, batched: left-padded batches through ``generate`` (how evaluation samples).
"""

from __future__ import annotations

import random
import time
from pathlib import Path
from typing import Any

from benchmarks.gpu_check.common import Plan, Results, build_model, cuda, peak_gb, release_gpu


def requests(count: int, prompt_chars: int) -> list[Any]:
    """Garble requests with prompts of about ``prompt_chars`` characters."""
    from agir_retrain.tasks.records import GarbleRequest, Message, PromptKind, Role
    from agir_retrain.tasks.synth import text

    rng = random.Random(0)
    made = []
    for number in range(count):
        listing = text.listing(rng, 64)
        while len(listing) < prompt_chars:
            listing += "\n" + text.listing(rng, 64)
        made.append(
            GarbleRequest(
                run_id=f"gpu-check-{number:04d}",
                prompt_kind=PromptKind.STRATEGY,
                prompt=(
                    Message(role=Role.SYSTEM, content=text.SYSTEM_PROMPT),
                    Message(role=Role.USER, content=listing[:prompt_chars]),
                ),
                chosen=text.strategy(rng),
            )
        )
    return made


def _synchronize() -> None:
    if cuda():
        import torch

        torch.cuda.synchronize()


def sample_throughput(plan: Plan, model: Path, *, quantize: bool) -> dict[str, Any]:
    """Tokens/s of the garbler, one-at-a-time generate and batched generate, one model load."""
    import torch

    from agir_retrain.tasks.dataset.garble import Garbler, plan_batches
    from agir_retrain.tasks.settings.models import GarbleSettings

    settings = GarbleSettings(
        gpus_per_actor=1.0 if cuda() else 0.0,
        cpus_per_actor=float(torch.get_num_threads()),
        load_in_4bit=quantize,
        max_new_tokens=plan.new_tokens,
        min_new_tokens=plan.new_tokens,  # floor = cap: every request samples the same count
        max_redraws=0,
    )
    release_gpu()
    garbler = Garbler(str(model), settings)
    pool = requests(plan.sample_requests, prompt_chars=1500)
    garbler.garble(pool[:1])  # warm-up: CUDA kernels, allocator
    _synchronize()
    started = time.perf_counter()
    results = [
        r for batch in plan_batches(pool, settings.batch_size) for r in garbler.garble(batch)
    ]
    _synchronize()
    batched_s = time.perf_counter() - started
    garbled_tokens = sum(r.new_tokens for r in results)

    tokenizer, model_ = garbler.tokenizer, garbler.model
    prompts = [
        tokenizer.apply_chat_template(
            [{"role": m.role.value, "content": m.content} for m in r.prompt],
            add_generation_prompt=True,
            tokenize=False,
        )
        for r in pool
    ]
    kwargs = {
        "do_sample": True,
        "temperature": settings.temperature,
        "max_new_tokens": plan.new_tokens,
        "min_new_tokens": plan.new_tokens,
        "pad_token_id": garbler.pad_id,
    }
    single_tokens, started = 0, time.perf_counter()
    with torch.inference_mode():
        for prompt in prompts[: plan.sample_single]:
            ids = tokenizer(prompt, add_special_tokens=False, return_tensors="pt").to(
                garbler.device
            )
            out = model_.generate(**ids, **kwargs)
            single_tokens += out.shape[1] - ids["input_ids"].shape[1]
        _synchronize()
        single_s = time.perf_counter() - started
        batch_tokens, started = 0, time.perf_counter()
        for i in range(0, len(prompts), settings.batch_size):
            chunk = prompts[i : i + settings.batch_size]
            ids = tokenizer(chunk, add_special_tokens=False, padding=True, return_tensors="pt")
            out = model_.generate(**ids.to(garbler.device), **kwargs)
            batch_tokens += (out.shape[1] - ids["input_ids"].shape[1]) * len(chunk)
        _synchronize()
        generate_batched_s = time.perf_counter() - started
    row = {
        "requests": len(pool),
        "batch_size": settings.batch_size,
        "new_tokens_per_request": plan.new_tokens,
        "garbler_tokens_per_s": round(garbled_tokens / batched_s, 1),
        "generate_single_tokens_per_s": round(single_tokens / single_s, 1),
        "generate_single_requests": plan.sample_single,
        "generate_batched_tokens_per_s": round(batch_tokens / generate_batched_s, 1),
        "peak_gpu_memory_gb": peak_gb(),
    }
    row["garbler_vs_single"] = round(
        row["garbler_tokens_per_s"] / row["generate_single_tokens_per_s"], 2
    )
    del garbler, model_
    release_gpu()
    return row


def run_sampling(plan: Plan, results: Results) -> None:
    """Sampling throughput with the base in 4-bit and in bf16."""
    model = Path(build_model(plan)["folder"])
    for quantize in (True, False):
        with results.attempt("sampling", quantize=quantize) as row:
            row.update(sample_throughput(plan, model, quantize=quantize))
