"""Benchmark the training program's reference modes on a GPU: peak memory and tokens/s.

    python benchmarks/train_memory_gpu.py --shape 7b --steps 8

Needs a CUDA GPU (it exits, saying so, without one). A randomly initialised Llama of
realistic shape (7B: hidden 4096, 32 layers, 11008 MLP, vocab 32000; no weights are
downloaded) is saved once in bf16, then `python -m agir_retrain.tasks.training` runs in a fresh
process per mode, loading it in 4-bit NF4 exactly as a real model is loaded:
- adapter:     the base with the adapter disabled is the reference (the default);
- separate:    a second 4-bit copy of the base is the reference, as the seed did;
- precomputed: reference log-probs are computed once before training.
Each run records its peak `torch.cuda.max_memory_allocated()` in metrics.json; tokens/s
is TRL's `num_tokens` over the training runtime. Target: adapter <= 0.6x separate.

On the device tool, trl and bitsandbytes travel as wheels (see its README) and the
model folder is written to local disk under bench-out/ (~13.5 GB for 7B).
Writes bench-out/train_memory_gpu.json.
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
OUT = ROOT / "bench-out"
SHAPES = {
    "7b": {"hidden_size": 4096, "intermediate_size": 11008, "num_hidden_layers": 32, "num_attention_heads": 32, "num_key_value_heads": 32, "vocab_size": 32000},
    "1b": {"hidden_size": 2048, "intermediate_size": 5632, "num_hidden_layers": 22, "num_attention_heads": 32, "num_key_value_heads": 4, "vocab_size": 32000},
}  # fmt: skip


def random_model(shape: str) -> Path:
    """Save a randomly initialised Llama of the shape, with the tiny model's tokenizer."""
    import torch
    from transformers import AutoTokenizer, LlamaConfig, LlamaForCausalLM

    from agir_retrain.tasks.synth.tiny_model import make_tiny_model

    folder = OUT / f"random-llama-{shape}"
    if (folder / "config.json").exists():
        return folder
    tiny = make_tiny_model(OUT / "tiny-model")
    tokenizer = AutoTokenizer.from_pretrained(tiny)
    config = LlamaConfig(
        **SHAPES[shape],
        max_position_embeddings=4096,
        pad_token_id=tokenizer.pad_token_id,
        eos_token_id=tokenizer.eos_token_id,
    )
    torch.manual_seed(0)
    with torch.device("cuda"):
        model = LlamaForCausalLM(config).to(torch.bfloat16)
    model.save_pretrained(folder, max_shard_size="2GB")
    tokenizer.save_pretrained(folder)
    del model
    torch.cuda.empty_cache()
    return folder


def dataset() -> Path:
    """DPO rows built from a synthetic corpus (rejected sides filled by stand-ins)."""
    import polars as pl

    from agir_retrain.tasks.dataset.export import export_dataset
    from agir_retrain.tasks.records import PAIR_SCHEMA
    from agir_retrain.tasks.runs.ingest import ingest
    from agir_retrain.tasks.runs.reader import ReadLimits
    from agir_retrain.tasks.settings.models import ExportSettings
    from agir_retrain.tasks.synth.corpus import write_corpus

    folder = OUT / "train-bench-data"
    if (folder / "dpo" / "train.jsonl").exists():
        return folder
    write_corpus(OUT / "train-bench-corpus", runs=200, seed=5)
    ingest(
        [str(OUT / "train-bench-corpus" / "runs")],
        str(folder),
        limits=ReadLimits(),
        shard_bytes=1 << 30,
        workers=1,
    )
    pairs = pl.read_parquet(folder / "pairs.parquet")
    pairs.with_columns(
        rejected=pl.coalesce("rejected", pl.format("garbled {}", "run_id")),
        garble_method=pl.when(pl.col("rejected").is_null())
        .then(pl.lit("model"))
        .otherwise(pl.col("garble_method").cast(pl.String))
        .cast(PAIR_SCHEMA["garble_method"]),
    ).write_parquet(folder / "pairs.parquet")
    export_dataset(str(folder), str(folder), ExportSettings(eval_share=0.0))
    return folder


def run_mode(model: Path, data: Path, mode: str, steps: int, max_length: int) -> dict:
    out = OUT / f"train-bench-{mode}"
    command = [
        sys.executable, "-m", "agir_retrain.tasks.training", "--dataset", str(data), "--base-model", str(model), "--out", str(out),
        "--set", f"reference={mode}", "--set", f"dpo.max_steps={steps}", "--set", "dpo.batch_size=1",
        "--set", "dpo.gradient_accumulation=1", "--set", f"dpo.max_length={max_length}", "--set", "dpo.save_steps=100000",
    ]  # fmt: skip
    subprocess.run(command, check=True, cwd=ROOT)
    metrics = json.loads((out / "metrics.json").read_text())
    tokens = max((row.get("num_tokens", 0) for row in metrics["log_history"]), default=0)
    return {
        "mode": mode,
        "peak_gpu_memory_gb": round(metrics["train"]["peak_gpu_memory_bytes"] / 2**30, 2),
        "tokens_per_s": round(tokens / metrics["train"]["train_runtime"], 1),
        "steps": metrics["train"]["global_step"],
    }


def main() -> None:
    import torch

    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--shape", choices=sorted(SHAPES), default="7b")
    parser.add_argument("--steps", type=int, default=8)
    parser.add_argument("--max-length", type=int, default=1024)
    args = parser.parse_args()
    if not torch.cuda.is_available():
        raise SystemExit(
            "no CUDA GPU here: this benchmark measures GPU memory; run it where one is"
        )
    os.environ.setdefault("HF_HUB_OFFLINE", "1")
    model, data = random_model(args.shape), dataset()
    rows = [
        run_mode(model, data, mode, args.steps, args.max_length)
        for mode in ("adapter", "separate", "precomputed")
    ]
    separate = next(r for r in rows if r["mode"] == "separate")["peak_gpu_memory_gb"]
    for row in rows:
        row["memory_vs_separate"] = round(row["peak_gpu_memory_gb"] / separate, 2)
    result = {
        "gpu": torch.cuda.get_device_name(),
        "shape": args.shape,
        "max_length": args.max_length,
        "modes": rows,
    }
    print(json.dumps(result, indent=2))
    OUT.mkdir(exist_ok=True)
    (OUT / "train_memory_gpu.json").write_text(json.dumps(result, indent=2))


if __name__ == "__main__":
    main()
