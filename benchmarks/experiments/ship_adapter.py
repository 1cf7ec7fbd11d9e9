"""Copy an experiment's adapter into the repository, in bfloat16 (half the bytes), for `make demo-real`.

    python -m benchmarks.experiments.ship_adapter bench-out/smollm2/sft/gen-1/adapter \
        docs/results/smollm2/adapter

Only what loading it needs travels (``adapter_config.json`` and the weights) and what says
where it came from (``lineage.json``, ``metrics.json``); the tokenizer is the base's, and
the trainer's checkpoints and pickled arguments stay behind. The base path the adapter
config names is replaced by the built-in name it was trained on.
"""

from __future__ import annotations

import argparse
import json
import shutil
from pathlib import Path

WEIGHTS = "adapter_model.safetensors"


def ship(source: Path, target: Path, base_name: str) -> None:
    """Write ``source``'s adapter to ``target`` with bfloat16 weights."""
    import torch
    from safetensors.torch import load_file, save_file

    target.mkdir(parents=True, exist_ok=True)
    tensors = load_file(source / WEIGHTS)
    save_file(
        {name: tensor.to(torch.bfloat16).contiguous() for name, tensor in sorted(tensors.items())},
        target / WEIGHTS,
        metadata={"format": "pt"},
    )
    config = json.loads((source / "adapter_config.json").read_text())
    config["base_model_name_or_path"] = base_name
    (target / "adapter_config.json").write_text(json.dumps(config, indent=2, sort_keys=True))
    for name in ("lineage.json", "metrics.json"):
        shutil.copyfile(source / name, target / name)


def main() -> None:
    """Parse the arguments and ship the adapter."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("source", type=Path)
    parser.add_argument("target", type=Path)
    parser.add_argument("--base-name", default="builtin:smollm2-135m")
    args = parser.parse_args()
    ship(args.source, args.target, args.base_name)


if __name__ == "__main__":
    main()
