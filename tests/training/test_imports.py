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
        "config = parse(['--set', 'dataset=d', '--set', 'dpo.beta=0.2'])\n"
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
        sys.executable, "-m", "agir_retrain.tasks.training", "--set", f"dataset={dataset}",
        "--set", f"base_model={tiny_model}", "--set", f"out={out}",
        "--set", "dpo.max_steps=1", "--set", "dpo.max_length=512", "--set", "dpo.eval_steps=null",
    ]  # fmt: skip
    result = subprocess.run(
        command, env=_without(tmp_path), capture_output=True, text=True, timeout=900
    )
    assert result.returncode == 0, result.stderr[-3000:]
    assert (out / "adapter_model.safetensors").is_file()
    assert json.loads((out / "metrics.json").read_text())["train"]["global_step"] == 1


# GRPO's whole data and reward path: the prompts (SFT rows and a tasks file), a scenario
# file, and two episodes in the sandbox; prints the rewards and which of argv[2:] it imported.
GRPO_PATH = """
import json, sys
from pathlib import Path
from agir_retrain.tasks.settings.models import TrainConfig
from agir_retrain.tasks.training import grpo

root = Path(sys.argv[1])
message = [{"role": "user", "content": "Free space."}]
scenario = {"name": "small", "seed": 3, "files": [
    {"path": "/var/cache/apt/archives/foo.deb", "bytes": 3000, "kind": "junk"},
    {"path": "/etc/app/app.conf", "bytes": 50, "kind": "protected"}]}
(root / "small.json").write_text(json.dumps(scenario))
(root / "rows" / "sft").mkdir(parents=True)
(root / "rows" / "sft" / "train.jsonl").write_text(json.dumps(
    {"prompt": message, "completion": [{"role": "assistant", "content": "x"}],
     "prompt_kind": "code", "run_id": "r0"}) + "\\n")
(root / "tasks" / "sft").mkdir(parents=True)
(root / "tasks" / "sft" / "train.jsonl").write_text(json.dumps(
    {"task_id": "t/code", "prompt": message, "scenario": str(root / "small.json")}) + "\\n")
found = {}
for data in ("rows", "tasks"):
    config = TrainConfig(dataset=str(root / data), base_model="m", out=str(root / "out"),
                         objective="grpo", grpo={"scenarios": [str(root / "small.json")],
                         "workers": 2, "environment": {"backend": "bwrap"}})
    rows = grpo.OBJECTIVE.load_data(config).train
    reward = grpo.make_reward(config, rows)
    program = "```python\\nimport os\\nos.remove('/var/cache/apt/archives/foo.deb')\\n```"
    found[data] = reward(prompts=[rows[0]["prompt"]] * 2, completions=[program, "no code"],
                         task_id=[rows[0]["task_id"]] * 2, scenario=[rows[0]["scenario"]] * 2)
found["imported"] = sorted(name for name in sys.argv[2:] if sys.modules.get(name) is not None)
print(json.dumps(found))
"""


@pytest.mark.parametrize("blocked", [True, False], ids=["absent", "installed"])
def test_grpo_prompts_and_episodes_without_them(tmp_path, blocked):
    """GRPO reads its prompts, loads its scenario and runs episodes without polars or orjson.

    Blocked, the path must work; with everything installed, it must still not import
    polars, prefect or ray (orjson is used where present).
    """
    from agir_retrain.tasks.environment.sandbox import SandboxError
    from agir_retrain.tasks.environment.sandbox_bwrap import BwrapSandbox

    try:
        BwrapSandbox()
    except SandboxError as exc:
        pytest.skip(f"bubblewrap cannot run here: {exc}")
    env = _without(tmp_path) if blocked else os.environ | {"HF_HUB_OFFLINE": "1"}
    result = subprocess.run(
        [sys.executable, "-c", GRPO_PATH, str(tmp_path), *ABSENT],
        env=env, capture_output=True, text=True, timeout=300,
    )  # fmt: skip
    assert result.returncode == 0, result.stderr[-3000:]
    found = json.loads(result.stdout.strip().splitlines()[-1])
    # freed 3000 of 3000 junk bytes; no program (the did-not-run penalty)
    assert found["rows"] == found["tasks"] == [1.0, -0.5]
    assert found["imported"] == ([] if blocked else ["orjson"])
