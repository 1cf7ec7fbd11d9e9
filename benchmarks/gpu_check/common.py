"""What every part of the GPU check shares: the plan, model shapes, the data, result files."""

from __future__ import annotations

import json
import os
import random
import time
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parents[2]
MODES = ("adapter", "separate", "precomputed")

# Real widths of two 7B families; "tiny" keeps every width a multiple of 32 (bitsandbytes'
# CPU 4-bit kernel needs that, see docs/environment notes) for the CPU smoke run.
SHAPES: dict[str, dict[str, Any]] = {
    "qwen2-7b": {"family": "qwen2", "hidden_size": 3584, "intermediate_size": 18944, "num_hidden_layers": 28, "num_attention_heads": 28, "num_key_value_heads": 4, "vocab_size": 152064},
    "llama-7b": {"family": "llama", "hidden_size": 4096, "intermediate_size": 11008, "num_hidden_layers": 32, "num_attention_heads": 32, "num_key_value_heads": 32, "vocab_size": 32000},
    "tiny": {"family": "qwen2", "hidden_size": 64, "intermediate_size": 128, "num_hidden_layers": 2, "num_attention_heads": 4, "num_key_value_heads": 2, "vocab_size": 0},
}  # fmt: skip


@dataclass(frozen=True, slots=True, kw_only=True)
class Plan:
    """What one check measures, and at which size; passed to each part's process as JSON."""

    smoke: bool
    shape: str
    layers: int | None  # None: the shape's own depth
    short_layers: int  # depth of the model the FSDP and GRPO parts use (same widths)
    work: str  # models, data and runs (never under --out: a 7B model is 15 GB)
    lengths: tuple[int, ...]
    steps: int
    modes: tuple[str, ...]
    bf16_modes: tuple[str, ...]
    sample_requests: int
    sample_single: int  # requests also sampled one at a time with generate
    new_tokens: int
    part_timeouts_s: dict[str, int] = field(default_factory=dict)

    def to_json(self) -> str:
        """The plan as JSON, for a part's command line."""
        return json.dumps(asdict(self))

    @classmethod
    def from_json(cls, text: str) -> Plan:
        """Read a plan written by ``to_json``."""
        raw = json.loads(text)
        for key in ("lengths", "modes", "bf16_modes"):
            raw[key] = tuple(raw[key])
        return cls(**raw)


def cuda() -> bool:
    """Whether a CUDA GPU is visible."""
    import torch

    return torch.cuda.is_available()


def model_dir(plan: Plan, *, short: bool = False) -> Path:
    """Where the random model of the plan's shape (or its short variant) is saved."""
    layers = (
        plan.short_layers if short else (plan.layers or SHAPES[plan.shape]["num_hidden_layers"])
    )
    return Path(plan.work) / f"random-{plan.shape}-{layers}l"


def model_config(shape: str, layers: int, *, vocab_at_least: int, pad_id: int, eos_id: int) -> Any:
    """The transformers config of a shape, at ``layers`` layers, untied, 4096 positions."""
    from transformers import AutoConfig

    dims = dict(SHAPES[shape])
    family = dims.pop("family")
    dims |= {"num_hidden_layers": layers, "vocab_size": max(dims["vocab_size"], vocab_at_least)}
    return AutoConfig.for_model(
        family,
        **dims,
        max_position_embeddings=4096,
        pad_token_id=pad_id,
        eos_token_id=eos_id,
        bos_token_id=None,
        tie_word_embeddings=False,
    )


def build_model(plan: Plan, *, short: bool = False) -> dict[str, Any]:
    """Save a randomly initialised model of the shape once (bf16), with the tiny tokenizer."""
    import torch
    from transformers import AutoModelForCausalLM, AutoTokenizer

    from agir_retrain.tasks.synth.tiny_model import make_tiny_model

    folder = model_dir(plan, short=short)
    dims = {k: v for k, v in SHAPES[plan.shape].items() if k != "family"}
    layers = int(folder.name.rsplit("-", 1)[-1].removesuffix("l"))
    if (folder / "config.json").exists():
        saved = json.loads((folder / "config.json").read_text())
        return {"folder": str(folder), "reused": True, **{k: saved.get(k) for k in dims}}
    started = time.perf_counter()
    source = Path(plan.work) / "tokenizer-source"
    if not (source / "tokenizer.json").exists():
        make_tiny_model(source)
    tokenizer = AutoTokenizer.from_pretrained(source)
    config = model_config(
        plan.shape,
        layers,
        vocab_at_least=len(tokenizer),
        pad_id=tokenizer.pad_token_id,
        eos_id=tokenizer.eos_token_id,
    )
    torch.manual_seed(0)
    with torch.device("cuda" if cuda() else "cpu"):
        model = AutoModelForCausalLM.from_config(config, dtype=torch.bfloat16)
    staging = folder.with_name(f".{folder.name}.{os.getpid()}")
    model.save_pretrained(staging, max_shard_size="4GB")
    tokenizer.save_pretrained(staging)
    parameters = sum(p.numel() for p in model.parameters())
    del model
    if cuda():
        torch.cuda.empty_cache()
    staging.rename(folder)
    return {
        "folder": str(folder),
        "reused": False,
        "parameters": parameters,
        "build_s": round(time.perf_counter() - started, 1),
        **{k: getattr(config, k) for k in dims},
    }


def write_dpo_data(plan: Plan, max_length: int, rows: int) -> Path:
    """Write conversational DPO rows long enough that fitting brings each to ``max_length``."""
    from agir_retrain.tasks.synth import text

    folder = Path(plan.work) / f"dpo-data-{max_length}-{rows}"
    if (folder / "train.jsonl").exists():
        return folder
    rng = random.Random(max_length)
    folder.mkdir(parents=True, exist_ok=True)
    lines = []
    for _ in range(rows):
        # ~8 characters a token is generous for the tiny BPE: the prompt always overflows and is
        # cut to fit, so every row is prompt + longest completion = max_length tokens.
        listing = text.listing(rng, max_length // 4)
        while len(listing) < 8 * max_length:
            listing += "\n" + text.listing(rng, max_length // 4)
        completion = " ".join(text.strategy(rng) for _ in range(max(1, max_length // 256)))
        lines.append(
            json.dumps(
                {
                    "prompt": [
                        {"role": "system", "content": text.SYSTEM_PROMPT},
                        {"role": "user", "content": listing},
                    ],
                    "chosen": [{"role": "assistant", "content": completion}],
                    "rejected": [{"role": "assistant", "content": completion[::-1]}],
                }
            )
        )
    (folder / "train.jsonl").write_text("\n".join(lines) + "\n")
    return folder


class Results:
    """A part's findings, appended to a JSON-lines file as they come (a killed part keeps them)."""

    def __init__(self, path: str | Path) -> None:
        self.path = Path(path)

    def add(self, **row: Any) -> None:
        """Append one finding."""
        with self.path.open("a") as handle:
            handle.write(json.dumps(row, default=str) + "\n")

    @contextmanager
    def attempt(self, kind: str, **labels: Any) -> Iterator[dict[str, Any]]:
        """Record one measurement: what the body fills in, or the error that stopped it."""
        row: dict[str, Any] = {}
        started = time.perf_counter()
        try:
            yield row
        except Exception as error:  # noqa: BLE001 - one failed measurement must not stop the next
            self.add(kind=kind, **labels, status="failed", reason=_reason(error),
                     wall_s=round(time.perf_counter() - started, 1))  # fmt: skip
            return
        self.add(kind=kind, **labels, status="ok", **row,
                 wall_s=round(time.perf_counter() - started, 1))  # fmt: skip

    def read(self) -> list[dict[str, Any]]:
        """Every finding written so far."""
        if not self.path.exists():
            return []
        return [json.loads(line) for line in self.path.read_text().splitlines() if line.strip()]


def _reason(error: BaseException) -> str:
    text = f"{type(error).__name__}: {error}".strip()
    return text if len(text) <= 600 else text[:300] + " ... " + text[-300:]


def release_gpu() -> float | None:
    """Free what the last run left and reset the peak; return what is still allocated (GB)."""
    import gc

    import torch

    gc.collect()
    if not torch.cuda.is_available():
        return None
    torch.cuda.synchronize()
    torch.cuda.empty_cache()
    torch.cuda.reset_peak_memory_stats()
    return round(torch.cuda.memory_allocated() / 2**30, 3)


def peak_gb() -> float | None:
    """Peak GPU memory allocated since the last reset, in GiB (None without a GPU)."""
    import torch

    if not torch.cuda.is_available():
        return None
    torch.cuda.synchronize()
    return round(torch.cuda.max_memory_allocated() / 2**30, 3)
