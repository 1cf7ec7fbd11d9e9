"""The adapter the real-model experiment trained, shipped for `make demo-real` (docs/results.md)."""

from __future__ import annotations

import json
import os
import re
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]
RESULTS = ROOT / "docs" / "results" / "smollm2"
HIDDEN, INTERMEDIATE, KV = 576, 1536, 192  # SmolLM2-135M's widths (3 key-value heads of 64)


def test_the_shipped_adapter_is_a_lora_of_smollm2_in_bfloat16():
    from safetensors import safe_open

    config = json.loads((RESULTS / "adapter" / "adapter_config.json").read_text())
    assert config["peft_type"] == "LORA"
    assert config["base_model_name_or_path"] == "builtin:smollm2-135m"
    rank = config["r"]
    out_width = {"q_proj": HIDDEN, "k_proj": KV, "v_proj": KV, "o_proj": HIDDEN}
    out_width |= {"gate_proj": INTERMEDIATE, "up_proj": INTERMEDIATE, "down_proj": HIDDEN}
    layers = set()
    with safe_open(RESULTS / "adapter" / "adapter_model.safetensors", framework="pt") as weights:
        names = list(weights.keys())
        for name in names:
            tensor = weights.get_tensor(name)
            assert str(tensor.dtype) == "torch.bfloat16", name
            found = re.search(r"layers\.(\d+)\..*\.(\w+_proj)\.lora_([AB])\.weight$", name)
            assert found, name
            layers.add(int(found[1]))
            if found[3] == "A":
                assert tensor.shape[0] == rank, name
            else:
                assert tuple(tensor.shape) == (out_width[found[2]], rank), name
    assert layers == set(range(30))  # every layer of the 30
    lineage = json.loads((RESULTS / "adapter" / "lineage.json").read_text())
    assert lineage["generations"], "the lineage names the datasets it learned from"


def test_the_shipped_held_out_tasks_are_the_contracts_and_never_trained_on():
    from agir_retrain.tasks.evaluation.eval_tasks import read_tasks

    tasks = read_tasks(str(RESULTS / "heldout_tasks.jsonl"))
    assert len(tasks) >= 48
    seeds = {int(task.task_id.split("/")[0].removeprefix("gen-")) for task in tasks}
    assert min(seeds) >= 100_000  # the experiment trained on gen-0 .. gen-15


@pytest.mark.real_model
@pytest.mark.slow
def test_demo_real_evaluates_the_base_and_the_shipped_adapter(tmp_path):
    """What `make demo-real` runs, on 2 tasks and 1 sample."""
    out = tmp_path / "real"
    command = [
        sys.executable, "-m", "agir_retrain.flows.cli", "evaluate",
        "--tasks", str(RESULTS / "heldout_tasks.jsonl"), "--max-tasks", "2", "--samples", "1",
        "--temperature", "0.7", "--max-new-tokens", "256",
        "--base-model", "builtin:smollm2-135m", "--adapter", f"gen1={RESULTS / 'adapter'}",
        "--set", "sampling.dtype=bfloat16", "--out", str(out),
    ]  # fmt: skip
    env = os.environ | {"COLUMNS": "200"}
    env.pop("RAY_ADDRESS", None)
    done = subprocess.run(
        command, capture_output=True, text=True, timeout=900, env=env, check=False
    )
    assert done.returncode == 0, done.stdout[-3000:] + done.stderr[-3000:]
    evaluation = json.loads((out / "eval.json").read_text())
    assert set(evaluation["models"]) == {"base", "gen1"}
    completions = [json.loads(line) for line in (out / "completions.jsonl").open()]
    by_model = {c["model"]: c["completion"] for c in completions if c["task_id"].endswith("/s0")}
    assert by_model["base"] != by_model["gen1"]  # the adapter changes what the model writes
