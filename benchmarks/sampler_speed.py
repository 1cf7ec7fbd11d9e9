"""Benchmark the sampler against ``model.generate`` on the real model, on this machine's CPU.

    python -m benchmarks.sampler_speed --model builtin:smollm2-135m --threads 1

Collecting (and evaluation) is sampling-bound, so this times the project's ``Sampler``
(``tasks/models/sampler.py``) against transformers' ``generate`` on the same loaded model,
the same AGIR-like code prompts (the agent's system prompt, a few listing lines, the code
request: ~300-400 tokens, rendered with the model's chat template) batched the same way
(left-padded batches of ``--batch``), the same temperature and no top-k/top-p cut:
- distinct prompts, every row making ``--new-tokens`` (EOS ignored on both sides:
  ``min_new_tokens`` for ``generate``, the sampler's ``eos_id`` set to -1): the same work;
- ``--k`` samples of one prompt (what evaluation and collecting draw most): the sampler
  sharing the prompt's prefill, the sampler with sharing off, ``generate`` given it k times;
- distinct prompts, rows stopping at EOS as in use: the sampler (finished rows leave the
  batch), the sampler keeping them (the same samples: same seeds), and ``generate`` (its
  own samples; tokens counted to each row's EOS).

One thread by default: on 2 cores sampling runs as 2 actors of one thread each (``actors``,
``cpus_per_actor``), and under other load a 2-thread torch stalls whenever one of its
threads is descheduled (it measured 2.7 tokens/s at load 8). Rounds alternate the sides
(ours, generate, ours, ...) so load from other processes hits them alike; every call's rate
and the load average are printed as it ends; at the end, each side's median rate and the
median of its call-by-call ratios to ``generate``, also written to bench-out/sampler_speed.json.
"""

from __future__ import annotations

import argparse
import functools
import json
import os
import random
import statistics
import time
from pathlib import Path
from typing import Any

os.environ.setdefault("HF_HUB_OFFLINE", "1")

OUT = Path(__file__).resolve().parent.parent / "bench-out"
TEMPERATURE = 0.7  # evaluation's default


def agir_code_prompts(tokenizer: Any, count: int, *, seed: int = 0, tokens: int = 400) -> list[str]:
    """Rendered AGIR-like code prompts: the agent's system prompt, a few lines of a container
    listing, the code request; 1-6 listing lines (fewer where ``tokens`` would be passed),
    so lengths vary as runs' do (~280-400 tokens with SmolLM2's tokenizer)."""
    from agir_retrain.tasks.synth import text

    rng = random.Random(seed)
    prompts = []
    for _ in range(count):
        request = text.CODE_REQUEST.format(strat=text.strategy(rng))
        listing = text.listing(rng, 600).splitlines()
        lines = rng.randint(1, 6)
        while True:
            messages = [
                {"role": "system", "content": text.SYSTEM_PROMPT},
                {"role": "user", "content": "\n".join(listing[:lines])},
                {"role": "user", "content": request},
            ]
            rendered = tokenizer.apply_chat_template(
                messages, add_generation_prompt=True, tokenize=False
            )
            length = len(tokenizer(rendered, add_special_tokens=False)["input_ids"])
            if length <= tokens or lines == 1:
                break
            lines -= 1
        prompts.append(rendered)
    return prompts


def generate_rows(
    model: Any, tokenizer: Any, prompts: list[str], *, new_tokens: int, to_eos: bool = False
) -> int:
    """Sample every prompt with ``generate`` (left-padded, one call); return the tokens made.

    Without ``to_eos`` every row makes ``new_tokens`` (EOS suppressed); with it, rows stop
    at EOS and the tokens before each row's EOS are counted.
    """
    import torch

    tokenizer.padding_side = "left"
    batch = tokenizer(prompts, return_tensors="pt", padding=True, add_special_tokens=False)
    with torch.inference_mode():
        out = model.generate(
            **batch,
            do_sample=True,
            temperature=TEMPERATURE,
            top_k=0,
            top_p=1.0,
            max_new_tokens=new_tokens,
            min_new_tokens=1 if to_eos else new_tokens,
            pad_token_id=tokenizer.pad_token_id,
        )
    made = out[:, batch["input_ids"].shape[1] :].tolist()
    eos = tokenizer.eos_token_id
    return sum(row.index(eos) if to_eos and eos in row else len(row) for row in made)


def sampler_rows(
    sampler: Any, prompts: list[str], *, new_tokens: int | list[int], seed: int
) -> int:
    """Sample every prompt with the project's sampler (one call); return the tokens made."""
    seeds = [seed * 1000 + i for i in range(len(prompts))]
    budgets = new_tokens if isinstance(new_tokens, list) else [new_tokens] * len(prompts)
    made = sampler.sample(prompts, seeds, budgets, TEMPERATURE)
    return sum(s.new_tokens for s in made)


def compare(sides: dict[str, Any], batches: list[list[str]], rounds: int) -> dict[str, float]:
    """Median tokens/s of each side over the same batches, the sides taking turns per batch."""
    rates: dict[str, list[float]] = {name: [] for name in sides}
    made = dict.fromkeys(sides, 0)
    for round_ in range(rounds):
        for i, batch in enumerate(batches):
            for name, side in sides.items():
                load = os.getloadavg()[0]
                started = time.perf_counter()
                tokens = side(batch, round_ * 100 + i)
                rates[name].append(tokens / (time.perf_counter() - started))
                made[name] += tokens
                print(f"  round {round_} batch {i} {name}: {rates[name][-1]:.1f} tokens/s "
                      f"(load {load:.1f})", flush=True)  # fmt: skip
    medians = {name: statistics.median(values) for name, values in rates.items()}
    result = {f"{name}_tokens_per_s": round(rate, 1) for name, rate in medians.items()}
    # Ratios call by call (each against generate on the same batch, timed next to it), then
    # their median: steadier than a ratio of medians while the load moves between rounds.
    for name in sides:
        if name != "generate":
            paired = [a / b for a, b in zip(rates[name], rates["generate"], strict=True)]
            result[f"{name}_vs_generate"] = round(statistics.median(paired), 2)
    result["calls_each"] = len(rates["generate"])
    result["tokens_made"] = made
    return result


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--model", default="builtin:smollm2-135m")
    parser.add_argument("--dtype", default="auto", choices=["auto", "float32", "bfloat16"])
    parser.add_argument(
        "--threads", type=int, default=1, help="torch threads (1: as each sampling actor runs)"
    )
    parser.add_argument("--batch", type=int, default=8, help="rows per call (evaluation's default)")
    parser.add_argument("--batches", type=int, default=1, help="distinct batches per round")
    parser.add_argument("--new-tokens", type=int, default=128)
    parser.add_argument("--prompt-tokens", type=int, default=400, help="at most, per prompt")
    parser.add_argument("--k", type=int, default=8, help="samples of one prompt (shared prefill)")
    parser.add_argument("--rounds", type=int, default=2)
    parser.add_argument(
        "--parts",
        default="distinct,shared,eos,varied",
        help="comma-separated: distinct, shared (k of one prompt), eos, varied (budgets)",
    )
    args = parser.parse_args()

    from agir_retrain.tasks.models.resolve import resolve_model
    from agir_retrain.tasks.models.sampler import Sampler

    load_before = os.getloadavg()[0]
    folder = resolve_model(args.model)
    sampler = Sampler.load(folder, cpus=args.threads, dtype=args.dtype, max_prompt_tokens=1536)
    prompts = agir_code_prompts(
        sampler.tokenizer, args.batch * args.batches, tokens=args.prompt_tokens
    )
    lengths = [len(sampler.tokenizer(p, add_special_tokens=False)["input_ids"]) for p in prompts]
    batches = [prompts[i : i + args.batch] for i in range(0, len(prompts), args.batch)]
    sampler_rows(sampler, prompts[:1], new_tokens=4, seed=0)  # warm-up: kernels, allocator
    eos_id = sampler.eos_id
    sampler.eos_id = -1  # every row makes exactly --new-tokens, as min_new_tokens does for generate
    ours = functools.partial(sampler_rows, sampler, new_tokens=args.new_tokens)
    theirs = functools.partial(
        generate_rows, sampler.model, sampler.tokenizer, new_tokens=args.new_tokens
    )

    def without_finished(batch: list[str], seed: int, budgets: list[int]) -> int:
        sampler.drop_finished = False
        try:
            return sampler_rows(sampler, batch, new_tokens=budgets, seed=seed)
        finally:
            sampler.drop_finished = True

    def without(switch: str) -> Any:
        def side(batch: list[str], seed: int) -> int:
            setattr(sampler, switch, False)
            try:
                return ours(batch, seed=seed)
            finally:
                setattr(sampler, switch, True)

        return side

    parts = set(args.parts.split(","))
    result: dict[str, Any] = {}
    if "distinct" in parts:
        result["distinct_prompts"] = compare(
            {"sampler": lambda b, s: ours(b, seed=s), "generate": lambda b, _s: theirs(b)},
            batches,
            args.rounds,
        )
    if "shared" in parts:
        result[f"one_prompt_k{args.k}"] = compare(
            {
                "sampler": lambda b, s: ours(b, seed=s),
                "sampler_unshared": without("share_prefill"),
                "generate": lambda b, _s: theirs(b),
            },
            [[p] * args.k for p in prompts[: args.batches]],
            args.rounds,
        )
    # Rows stop at EOS, as in use: the sampler with and without finished rows leaving the
    # batch draws the same samples (same seeds); generate draws its own, counted to EOS.
    sampler.eos_id = eos_id
    if "eos" in parts:
        result["distinct_prompts_to_eos"] = compare(
            {
                "sampler": lambda b, s: ours(b, seed=s),
                "sampler_keeping_finished": without("drop_finished"),
                "generate": lambda b, _s: theirs(b, to_eos=True),
            },
            batches,
            args.rounds,
        )
    # Garbling's shape: each row its own budget (about its chosen text's length), EOS off.
    # generate runs every row to the longest budget; only each row's budget counts for it.
    budgets = [args.new_tokens * (i + 1) // 4 for i in range(args.batch)]
    sampler.eos_id = -1
    if "varied" in parts:
        result["varied_budgets"] = {"budgets": budgets} | compare(
            {
                "sampler": lambda b, s: sampler_rows(sampler, b, new_tokens=budgets, seed=s),
                "sampler_keeping_finished": lambda b, s: without_finished(b, s, budgets),
                "generate": lambda b, _s: min(
                    theirs(b, new_tokens=max(budgets)), sum(budgets[: len(b)])
                ),
            },
            batches,
            args.rounds,
        )
    result = {
        "model": args.model,
        "dtype": str(sampler.model.dtype),
        "threads": args.threads,
        "batch": args.batch,
        "new_tokens": args.new_tokens,
        "prompt_tokens": {"min": min(lengths), "max": max(lengths)},
        **result,
        "load_average_1m": {"before": round(load_before, 2), "after": round(os.getloadavg()[0], 2)},
    }
    OUT.mkdir(exist_ok=True)
    (OUT / "sampler_speed.json").write_text(json.dumps(result, indent=2) + "\n")
    print(json.dumps(result, indent=2))


if __name__ == "__main__":
    main()
