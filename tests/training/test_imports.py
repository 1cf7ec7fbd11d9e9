"""The training program runs where polars, orjson, prefect and ray are not installed.

The GPU machines have none of them (their wheels would not fit what reaches that
machine), so the program and everything it imports must do without. A
``sitecustomize`` in a child process makes importing any of them fail, as there.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

ABSENT = ("polars", "orjson", "prefect", "ray")


def _without(tmp_path: Path) -> dict[str, str]:
    """An environment whose Python cannot import any of ``ABSENT``."""
    shim = tmp_path / "absent"
    shim.mkdir(exist_ok=True)
    (shim / "sitecustomize.py").write_text(
        "import sys\n" + "".join(f"sys.modules[{name!r}] = None\n" for name in ABSENT)
    )
    return os.environ | {"PYTHONPATH": str(shim), "HF_HUB_OFFLINE": "1"}


def test_the_shim_blocks(tmp_path):
    result = subprocess.run(
        [sys.executable, "-c", "import orjson"],
        env=_without(tmp_path), capture_output=True, text=True, timeout=120,
    )  # fmt: skip
    assert result.returncode != 0
    assert "ModuleNotFoundError" in result.stderr


def test_the_program_imports_and_parses_without_them(tmp_path):
    code = (
        "from agir_retrain.tasks.training.program import parse, check_data\n"
        "import agir_retrain.tasks.training.__main__\n"
        "config = parse(['--dataset', 'd', '--set', 'dpo.beta=0.2'])\n"
        "print(config.dpo.beta)\n"
    )
    result = subprocess.run(
        [sys.executable, "-c", code],
        env=_without(tmp_path), capture_output=True, text=True, timeout=300,
    )  # fmt: skip
    assert result.returncode == 0, result.stderr[-2000:]
    assert result.stdout.strip() == "0.2"


@pytest.mark.slow
def test_a_whole_run_without_them(dataset, tiny_model, tmp_path):
    out = tmp_path / "out"
    command = [
        sys.executable, "-m", "agir_retrain.tasks.training", "--dataset", str(dataset),
        "--base-model", tiny_model, "--out", str(out),
        "--set", "dpo.max_steps=1", "--set", "dpo.max_length=512", "--set", "dpo.eval_steps=null",
    ]  # fmt: skip
    result = subprocess.run(
        command, env=_without(tmp_path), capture_output=True, text=True, timeout=900
    )
    assert result.returncode == 0, result.stderr[-3000:]
    assert (out / "adapter_model.safetensors").is_file()
    assert json.loads((out / "metrics.json").read_text())["train"]["global_step"] == 1
