"""Benchmark garbling: the batched Ray actor pool against one-request-at-a-time `generate`.

    python benchmarks/garble_throughput.py --requests 96

Both sides answer the same requests (first-try pairs of a synthetic corpus) with the
same tiny model on the CPU, the same temperature, prompt budget and new-token budget:
- baseline: `model.generate(do_sample=True, temperature=2.0, top_k=0, top_p=1.0)`, one
  request at a time in this process (torch's default threads, one per core;
  `--baseline-threads` to change);
- ours: the garble actor pool (batches sorted by length and handed out longest first,
  each actor's `Sampler` left-padding a batch into a KV cache allocated once, one
  generator per row), actors and batch size from the settings. Actor start-up is timed
  separately.
Prints tokens/s side by side and the ratio; writes bench-out/garble_throughput.json.
Other work on the machine skews the ratio: the baseline's threads wait for each other
whenever one is descheduled, so on a busy machine it slows many times over and the ratio
soars. The 1-minute load average is recorded beside each side; on a busy machine
`--baseline-threads 1` gives the steadier figure (one core against the pool's two).
"""

from __future__ import annotations

import argparse
import json
import os
import time
from pathlib import Path

os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("RAY_AUTH_MODE", "disabled")

from agir_retrain.tasks.dataset.garble import Garbler, garble_requests, plan_batches, trim_message
from agir_retrain.tasks.records import Run
from agir_retrain.tasks.runs.ingest import ingest
from agir_retrain.tasks.runs.pairing import pair_run
from agir_retrain.tasks.runs.reader import ReadLimits
from agir_retrain.tasks.settings.models import GarbleSettings
from agir_retrain.tasks.synth.corpus import write_corpus
from agir_retrain.tasks.synth.tiny_model import make_tiny_model
from agir_retrain.tasks.tables import from_frame, read_table

OUT = Path(__file__).resolve().parent.parent / "bench-out"


def requests(count: int) -> list:
    corpus = OUT / "garble-corpus"
    if not (corpus / "ground_truth.json").exists():
        write_corpus(corpus, runs=max(200, count * 3), seed=4)
    ingest(
        [str(corpus / "runs")],
        str(OUT / "garble-dataset"),
        limits=ReadLimits(),
        shard_bytes=1 << 30,
        workers=1,
    )
    found = []
    for run in from_frame(read_table(OUT / "garble-dataset" / "runs.parquet", Run), Run):
        pending = [(p.prompt_kind, p.chosen) for p in pair_run(run).pairs if p.rejected is None]
        found += garble_requests(run, pending)
    return found[:count]


def baseline(
    model_dir: str, batch: list, settings: GarbleSettings, threads: int
) -> tuple[int, float]:
    """One `generate` call per request; returns (new tokens, seconds)."""
    import torch

    garbler = Garbler(model_dir, settings.model_copy(update={"cpus_per_actor": threads}))
    tokenizer, model = garbler.tokenizer, garbler.model
    tokens, start = 0, time.perf_counter()
    for request in batch:
        messages = [
            {
                "role": m.role.value,
                "content": trim_message(m.content, settings.max_prompt_chars_per_message),
            }
            for m in request.prompt
        ]
        text = tokenizer.apply_chat_template(messages, add_generation_prompt=True, tokenize=False)
        ids = tokenizer(text, return_tensors="pt", add_special_tokens=False, verbose=False)[
            "input_ids"
        ]
        ids = ids[:, -settings.max_prompt_tokens :]
        with torch.inference_mode():
            output = model.generate(
                ids,
                attention_mask=torch.ones_like(ids),
                do_sample=True,
                temperature=settings.temperature,
                top_k=0,
                top_p=1.0,
                max_new_tokens=garbler.new_token_budget(request.chosen),
                pad_token_id=tokenizer.pad_token_id,
            )
        tokens += output.shape[1] - ids.shape[1]
    return tokens, time.perf_counter() - start


def pool(model_dir: str, batch: list, settings: GarbleSettings) -> tuple[int, float, float]:
    """The actor pool; returns (new tokens, seconds sampling, seconds starting the actors)."""
    import ray

    from agir_retrain.tasks.ray_pool import GarblerPool

    ray.init(num_cpus=os.cpu_count(), include_dashboard=False, object_store_memory=1 << 30)
    try:
        start = time.perf_counter()
        with GarblerPool(model_dir, settings) as actors:
            actors.wait_ready()
            startup = time.perf_counter() - start
            start = time.perf_counter()
            results = actors.garble(plan_batches(batch, settings.batch_size))
            elapsed = time.perf_counter() - start
    finally:
        ray.shutdown()
    return sum(r.new_tokens for r in results), elapsed, startup


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--requests", type=int, default=96)
    parser.add_argument("--batch-size", type=int, default=16)
    parser.add_argument("--actors", type=int, default=os.cpu_count() or 1)
    parser.add_argument(
        "--baseline-threads",
        type=int,
        default=os.cpu_count() or 1,
        help="torch threads of the baseline (default: every core, torch's own default); "
        "1 keeps it from stalling on a busy machine, where a thread waits for the other",
    )
    args = parser.parse_args()
    model_dir = str(make_tiny_model(OUT / "tiny-model"))
    batch = requests(args.requests)
    settings = GarbleSettings(batch_size=args.batch_size, actors=args.actors, cpus_per_actor=1)
    loads = [os.getloadavg()[0]]
    base_tokens, base_seconds = baseline(model_dir, batch, settings, args.baseline_threads)
    loads.append(os.getloadavg()[0])
    pool_tokens, pool_seconds, startup = pool(model_dir, batch, settings)
    loads.append(os.getloadavg()[0])
    row = {
        "requests": len(batch),
        "actors": args.actors,
        "baseline_threads": args.baseline_threads,
        "batch_size": args.batch_size,
        "max_prompt_tokens": settings.max_prompt_tokens,
        "baseline_tokens": base_tokens,
        "baseline_s": round(base_seconds, 2),
        "baseline_tokens_per_s": round(base_tokens / base_seconds, 1),
        "pool_tokens": pool_tokens,
        "pool_s": round(pool_seconds, 2),
        "pool_tokens_per_s": round(pool_tokens / pool_seconds, 1),
        "pool_actor_startup_s": round(startup, 2),
        "speedup": round((pool_tokens / pool_seconds) / (base_tokens / base_seconds), 1),
        "load_1min_start_after_baseline_end": [round(x, 1) for x in loads],
    }
    print(json.dumps(row, indent=2))
    (OUT / "garble_throughput.json").write_text(json.dumps(row, indent=2))


if __name__ == "__main__":
    main()
