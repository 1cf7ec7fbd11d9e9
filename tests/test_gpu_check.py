"""The prepared GPU check (benchmarks/gpu_check): its smoke run on the CPU, summary and limits.

The smoke run is the check itself at a tiny shape, with polars, orjson, prefect and ray
blocked as they are absent on the GPU machine, so the script cannot rot between GPU windows.
"""

from __future__ import annotations

import hashlib
import json
import os
import re
import subprocess
import sys
from datetime import datetime
from pathlib import Path
from types import ModuleType

import pytest

ROOT = Path(__file__).resolve().parents[1]
ABSENT_ON_GPU = ["polars", "orjson", "prefect", "ray"]


@pytest.fixture
def check(monkeypatch: pytest.MonkeyPatch) -> ModuleType:
    """The check's modules, importable from the repository root."""
    monkeypatch.syspath_prepend(str(ROOT))
    import benchmarks.gpu_check.__main__ as main

    return main


def _dpo_row(mode: str, length: int, peak: float, rate: float, quantize: bool = True) -> dict:
    return {"kind": "dpo", "status": "ok", "mode": mode, "max_length": length, "quantize": quantize,
            "run_peak_gpu_memory_gb": peak, "tokens_per_s": rate}  # fmt: skip


def test_summary_ratios_from_rows(check: ModuleType) -> None:
    from benchmarks.gpu_check.report import summarise

    parts = {
        "qlora_dpo": {"status": "partial", "rows": [
            _dpo_row("adapter", 1024, 5.0, 900.0), _dpo_row("separate", 1024, 10.0, 600.0),
            _dpo_row("precomputed", 1024, 6.0, 1000.0),
            _dpo_row("adapter", 2048, 7.0, 800.0),  # its separate run failed: no ratio
            {"kind": "dpo", "status": "failed", "mode": "separate", "max_length": 2048, "reason": "OOM"},
        ]},
        "lora_dpo": {"status": "ok", "rows": [_dpo_row("adapter", 1024, 20.0, 1200.0, quantize=False)]},
        "sampling": {"status": "ok", "rows": [
            {"kind": "sampling", "status": "ok", "quantize": True, "sampler_vs_single": 7.5}]},
    }  # fmt: skip
    summary = summarise(parts)
    assert summary["adapter_vs_separate_memory"] == {"1024": 0.5}
    assert summary["precomputed_vs_separate_memory"] == {"1024": 0.6}
    assert summary["adapter_vs_separate_tokens_per_s"] == {"1024": 1.5}
    assert summary["qlora_vs_lora_memory"] == {"adapter/1024": 0.25}
    assert summary["adapter_vs_separate_met"] is True  # 0.5 <= 0.6
    assert summary["sampler_vs_single"] == {"4bit": 7.5}
    assert summary["parts"] == {"qlora_dpo": "partial", "lora_dpo": "ok", "sampling": "ok"}


def test_part_status_keeps_the_reason(check: ModuleType) -> None:
    ok = {"status": "ok"}
    failed = {"status": "failed", "reason": "CUDA out of memory"}
    absent = {"status": "not_available", "reason": "no GRPO yet"}
    assert check.part_status([ok, ok]) == {"status": "ok"}
    assert check.part_status([ok, failed, failed]) == {"status": "partial", "reason": "CUDA out of memory"}  # fmt: skip
    assert check.part_status([failed]) == {"status": "failed", "reason": "CUDA out of memory"}
    assert check.part_status([ok, absent]) == {"status": "not_available", "reason": "no GRPO yet"}
    assert check.part_status([])["status"] == "failed"


def test_tokens_per_s_leaves_out_the_first_step(check: ModuleType) -> None:
    from benchmarks.gpu_check.dpo import tokens_per_s

    history = [{"step": 1, "num_tokens": 100.0}, {"step": 2, "num_tokens": 300.0},
               {"step": 3, "num_tokens": 500.0}, {"step": 3, "train_runtime": 9.0}]  # fmt: skip
    ends = {1: 10.0, 2: 11.0, 3: 12.0}  # the first step (warm-up) took far longer
    assert tokens_per_s(history, ends) == (200.0, 500)
    with pytest.raises(ValueError, match="two logged steps"):
        tokens_per_s(history[:1], ends)


def test_blocked_imports_fail_like_missing_packages(check: ModuleType, tmp_path: Path) -> None:
    folder = check.blocked_imports_path(tmp_path, ("polars", "orjson"))
    probe = "import json\ntry:\n    import polars\nexcept ImportError:\n    print('blocked')\n"
    done = subprocess.run([sys.executable, "-c", probe], env={"PYTHONPATH": str(folder)},
                          capture_output=True, text=True, timeout=60, check=True)  # fmt: skip
    assert done.stdout.strip() == "blocked"


def test_a_part_past_its_limit_is_stopped_and_recorded(check: ModuleType, tmp_path: Path) -> None:
    args = check.make_parser().parse_args(["--cpu-smoke", "--out", str(tmp_path), "--work", str(tmp_path / "w")])  # fmt: skip
    plan = check.make_plan(args)
    (tmp_path / "logs").mkdir()
    env = check.child_env(plan, ())
    assert env["OMP_NUM_THREADS"] == os.environ.get("OMP_NUM_THREADS", "1")  # smoke: one thread
    # One second is far too little to import torch: the part must be killed, not waited for.
    part = check.run_part("qlora_dpo", plan, tmp_path, env, limit_s=1.0)
    assert part["status"] == "timed_out"
    assert part["wall_s"] < 30
    assert "limit of 1 s" in part["reason"]


def test_every_shipped_wheel_is_pinned() -> None:
    script = (ROOT / "benchmarks" / "fetch_gpu_wheels.sh").read_text()
    packages = re.search(r"PACKAGES=\(([^)]*)\)", script).group(1).split()
    pins = {
        re.sub(r"[-_]", "-", line.split("==")[0].lower())
        for line in (ROOT / "container" / "constraints.txt").read_text().splitlines()
        if "==" in line
    }
    assert {"bitsandbytes", "trl", "datasets", "pydantic", "pandas"} <= set(packages)
    assert not set(packages) & set(ABSENT_ON_GPU)  # the program must not need them
    missing = [name for name in packages if re.sub(r"[-_]", "-", name.lower()) not in pins]
    assert missing == []


def test_grpo_is_skipped_with_the_probes_reason_without_bwrap(
    check: ModuleType, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    from benchmarks.gpu_check import grpo
    from benchmarks.gpu_check.common import Results

    args = check.make_parser().parse_args(["--cpu-smoke", "--out", str(tmp_path), "--work", str(tmp_path / "w")])  # fmt: skip
    monkeypatch.setattr(grpo.shutil, "which", lambda name: None)  # a machine without bwrap
    results = Results(tmp_path / "grpo.jsonl")
    grpo.run_grpo(check.make_plan(args), results)
    sandbox, row = results.read()
    assert sandbox["runs"] is False
    assert row["kind"] == "grpo"
    assert row["status"] == "skipped"
    assert row["reason"] == "bubblewrap cannot run episodes here: bwrap is not installed on this machine"  # fmt: skip
    assert check.part_status([sandbox, row])["status"] == "skipped"
    assert not (tmp_path / "w").exists()  # nothing was built or fitted


def test_the_loops_code_imports_without_the_absent_packages(check: ModuleType, tmp_path: Path) -> None:  # fmt: skip
    """What the improve part runs imports where polars, orjson, prefect and ray are absent,
    and writes a scenario as orjson does (the attempts records hold one per attempt)."""
    from agir_retrain.tasks.environment.generator import generate_scenario
    from agir_retrain.tasks.environment.scenario import scenario_to_json

    code = (
        "import hashlib, sys\n"
        "import benchmarks.gpu_check.improve, benchmarks.gpu_check.loop\n"
        "from agir_retrain.tasks.agent import collect, episodes, heldout, reference, runfile\n"
        "from agir_retrain.tasks.evaluation.sampling import CompletionSampler\n"
        "from agir_retrain.tasks.improve import plan\n"
        "from agir_retrain.tasks.records import GarbleRequest\n"
        "from agir_retrain.tasks.environment.generator import generate_scenario\n"
        "from agir_retrain.tasks.environment.scenario import scenario_to_json\n"
        "assert 'polars' not in sys.modules or sys.modules['polars'] is None\n"
        "print(hashlib.sha256(b''.join(scenario_to_json(generate_scenario(s).scenario) for s in range(40))).hexdigest())\n"
    )  # fmt: skip
    env = check.child_env(check.make_plan(check.make_parser().parse_args(["--cpu-smoke", "--out", str(tmp_path), "--work", str(tmp_path)])), tuple(ABSENT_ON_GPU))  # fmt: skip
    done = subprocess.run([sys.executable, "-c", code], cwd=ROOT, env=env, capture_output=True, text=True, timeout=120, check=False)  # fmt: skip
    assert done.returncode == 0, done.stderr[-2000:]
    with_orjson = b"".join(scenario_to_json(generate_scenario(s).scenario) for s in range(40))
    assert done.stdout.strip() == hashlib.sha256(with_orjson).hexdigest()


def _improve_config(check: ModuleType, tmp_path: Path) -> object:
    from benchmarks.gpu_check.improve import SMOKE_SIZES, improve_config

    args = check.make_parser().parse_args(["--cpu-smoke", "--out", str(tmp_path), "--work", str(tmp_path / "w")])  # fmt: skip
    return improve_config(check.make_plan(args), str(tmp_path / "base"), SMOKE_SIZES)


def test_improve_samples_as_the_flows_do(check: ModuleType, tmp_path: Path) -> None:
    from agir_retrain.tasks.agent.collect import sampler_spec as flow_spec
    from agir_retrain.tasks.improve import plan
    from benchmarks.gpu_check.loop import heldout_spec, sampler_spec

    config = _improve_config(check, tmp_path)
    for number in (0, 1):  # the reference start's settings, then the adapter's
        collecting = plan.collect_config(config, number)
        assert sampler_spec(collecting) == flow_spec(collecting)
    gen1 = sampler_spec(plan.collect_config(config, 1))
    assert gen1.adapters == (("gen1", plan.paths(config, 1).adapter),)
    assert gen1.base_label == "base"
    # The part's held-out settings equal the collection's, so one sampler serves both.
    assert heldout_spec(config, 1) == gen1


def test_improve_sft_rows_are_the_successful_attempts_once(tmp_path: Path) -> None:
    from benchmarks.gpu_check.loop import sft_rows

    prompt = [{"role": "user", "content": "free space"}]
    attempts = [
        {"task_id": "gen-1", "run_index": 0, "strategy": 0, "outcome": "deletion_fail",
         "freed_bytes": 0, "prompt": prompt, "reply": "bad"},
        {"task_id": "gen-1", "run_index": 0, "strategy": 0, "outcome": "success",
         "freed_bytes": 10, "prompt": prompt, "reply": "good"},
        {"task_id": "gen-1", "run_index": 1, "strategy": 0, "outcome": "success",
         "freed_bytes": 10, "prompt": prompt, "reply": "good"},  # the same row again
    ]  # fmt: skip
    record = tmp_path / "attempts" / "gen-1" / "full_agent_data_x.jsonl"
    record.parent.mkdir(parents=True)
    record.write_text("".join(json.dumps(a) + "\n" for a in attempts))
    (row,) = sft_rows(str(tmp_path))
    assert row["prompt"] == prompt
    assert row["completion"] == [{"role": "assistant", "content": "good"}]
    assert (row["score"], row["prompt_kind"], row["run_id"]) == (10, "code", "gen-1#0/0")


def test_improve_without_bubblewrap_runs_no_program(check: ModuleType, tmp_path: Path) -> None:
    from agir_retrain.tasks.agent.collect import collect
    from agir_retrain.tasks.agent.outcomes import check_reply
    from agir_retrain.tasks.agent.reference import reference_policy
    from agir_retrain.tasks.improve import plan
    from benchmarks.gpu_check.loop import UnrunEpisodes, unjudged_reference_rows

    config = _improve_config(check, tmp_path)
    rows = unjudged_reference_rows(config)
    assert len(rows) >= config.scenarios  # each strategy of each training scenario
    for row in rows:
        assert check_reply(row["completion"][0]["content"]).failed is None  # a program
        assert row["prompt"][-1]["role"] == "user"  # the code request
    # Every run ends at its first program, excluded with the reason; nothing ran.
    collecting = plan.collect_config(config, 0)
    report = collect(collecting, sample=reference_policy, run_episodes=UnrunEpisodes("no bwrap here"))  # fmt: skip
    assert report.runs_excluded == config.scenarios * collecting.runs_per_task
    assert report.runs_written == 0
    assert sum(report.attempts_by_outcome.values()) == 0


@pytest.mark.slow
@pytest.mark.integration
@pytest.mark.timeout(1500)  # ~1.5 min here (a torch thread a part); more on a shared machine
def test_cpu_smoke_reports_every_part(tmp_path: Path) -> None:
    out = tmp_path / "out"
    done = subprocess.run(
        [sys.executable, "-m", "benchmarks.gpu_check", "--cpu-smoke", "--out", str(out),
         "--work", str(tmp_path / "work"), "--budget-s", "1400"],
        cwd=ROOT, capture_output=True, text=True, timeout=1450, check=False,
    )  # fmt: skip
    assert done.returncode == 0, done.stdout[-2000:] + done.stderr[-2000:]
    assert "agir-retrain GPU check (cpu-smoke)" in done.stdout  # the table comes last
    report = json.loads((out / "gpu_check.json").read_text())
    assert report["mode"] == "cpu-smoke"
    assert report["blocked_imports"] == ABSENT_ON_GPU
    datetime.fromisoformat(report["date"])
    assert report["machine"]["versions"]["torch"]
    assert report["machine"]["cpus"]
    parts = report["parts"]
    assert set(parts) == {"qlora_dpo", "lora_dpo", "sampling", "fsdp_qlora", "grpo", "improve"}
    for name, part in parts.items():
        assert part["status"] == "ok" or part.get("reason"), (name, part)
        for row in part["rows"]:
            assert row["status"] == "ok" or row.get("reason"), (name, row)
    plan = report["plan"]

    def dpo(name: str) -> dict:
        return {(r["mode"], r["max_length"]): r for r in parts[name]["rows"] if r["kind"] == "dpo"}

    for name, modes in (("qlora_dpo", plan["modes"]), ("lora_dpo", plan["bf16_modes"])):
        assert parts[name]["status"] == "ok", parts[name]
        rows = dpo(name)
        assert set(rows) == {(m, n) for m in modes for n in plan["lengths"]}
        for row in rows.values():
            assert row["tokens_per_s"] > 0
            assert row["steps"] == plan["steps"]
            assert row["rows"] > 0
            assert row["peak_gpu_memory_gb"] is None  # no GPU here, and none pretended

    sampling = [r for r in parts["sampling"]["rows"] if r["kind"] == "sampling"]
    assert [r["quantize"] for r in sampling] == [True, False]
    for row in sampling:
        assert row["status"] == "ok", row
        assert row["sampled_tokens"] == plan["sample_requests"] * plan["new_tokens"]
        assert row["sampler_tokens_per_s"] > 0
        assert row["generate_single_tokens_per_s"] > 0

    (fsdp,) = parts["fsdp_qlora"]["rows"]
    assert fsdp["status"] == "ok", fsdp
    assert fsdp["adapter_tensors"] == fsdp["tensors_equal_after_reload"] > 0
    assert fsdp["lora_b_nonzero"] > 0
    assert fsdp["reloaded_logits_finite"]

    kinds = {r["kind"]: r for r in parts["grpo"]["rows"]}
    assert isinstance(kinds["sandbox"].get("runs"), bool) or kinds["sandbox"]["reason"]
    grpo = kinds["grpo"]
    if not kinds["sandbox"].get("runs"):  # no bubblewrap here: said so, not failed
        assert grpo["status"] == "skipped", grpo
        assert "bubblewrap" in grpo["reason"], grpo
    else:
        assert parts["grpo"]["status"] == "ok", parts["grpo"]
        assert kinds["grpo_fit"]["fit_loss_last"] < kinds["grpo_fit"]["fit_loss_first"]
        assert grpo["steps"] == 2
        # Every completion ran in the sandbox: prompts x generations x steps episodes.
        assert grpo["episodes"] == grpo["episodes_expected"] == 2 * 4 * 2
        assert len(grpo["reward_mean"]) == len(grpo["reward_spread"]) == len(grpo["step_s"]) == 2
        assert 0 <= grpo["ran_share"] <= 1
        assert grpo["seconds_per_step"] > 0
        assert grpo["adapter_saved"]
        assert grpo["peak_gpu_memory_gb"] is None  # no GPU here
    _check_improve(parts["improve"], report["summary"]["improve"])
    assert set(report["summary"]["parts"]) == set(parts)


def _check_improve(part: dict, summary: dict) -> None:
    """One generation of the loop ran on its own code: what each stage must have made."""
    from benchmarks.gpu_check.improve import SMOKE_SIZES as SIZES

    kinds = {r["kind"]: r for r in part["rows"]}
    runs = SIZES.scenarios * SIZES.runs_per_task
    sandbox_runs = bool(kinds["sandbox"].get("runs"))
    if sandbox_runs:
        assert part["status"] == "ok", part
    else:  # only the episodes are skipped, with the reason
        assert part["status"] == "skipped", part
        assert "bubblewrap" in part["reason"], part
    for kind in ("improve_base", "improve_reference", "improve_fit", "improve_train", "improve_collect", "improve_heldout"):  # fmt: skip
        assert kinds[kind]["status"] == "ok", kinds[kind]
    reference, fit = kinds["improve_reference"], kinds["improve_fit"]
    assert reference["sft_rows"] > 0
    if sandbox_runs:  # the reference agent's programs ran in bubblewrap
        assert reference["runs_written"] == runs
        assert reference["episodes"] == sum(reference["attempts_by_outcome"].values()) > 0
        assert reference["episodes_per_s"] > 0
    assert fit["fit_loss_last"] < fit["fit_loss_first"]
    train = kinds["improve_train"]
    assert train["steps"] == SIZES.sft_steps
    assert train["tokens_per_s"] > 0
    assert train["seconds_per_step"] > 0
    assert train["adapter_saved"]
    assert train["quantized"]
    assert train["peak_gpu_memory_gb"] is None  # no GPU here
    collected = kinds["improve_collect"]
    assert collected["model"] == "gen1"
    assert collected["runs_written"] + collected["runs_excluded"] == runs
    assert 1 <= collected["waves"] <= 9  # 3 strategies x 3 attempts at most
    # Strategies are given: every reply is a code attempt, and every attempt whose program
    # parsed and compiled ran as an episode (without bubblewrap: ended its run, unrun).
    outcomes = collected["attempts_by_outcome"]
    assert collected["replies"] >= runs
    if sandbox_runs:
        assert sum(outcomes.values()) == collected["replies"]
        ran = outcomes["container_fail"] + outcomes["deletion_fail"] + outcomes["success"]
        assert collected["episodes"] == ran
    else:
        assert sum(outcomes.values()) + collected["programs_not_run"] == collected["replies"]
        assert collected["programs_not_run"] == collected["runs_excluded"]
        assert collected["episodes"] == 0
    assert 0 < collected["sampled_tokens"] <= collected["replies"] * SIZES.new_tokens
    assert collected["sampling_tokens_per_s"] > 0
    assert collected["replies_per_s"] > 0
    heldout = kinds["improve_heldout"]
    assert heldout["adapter_replies"] == heldout["base_replies"] == heldout["tasks"] * SIZES.heldout_samples  # fmt: skip
    assert heldout["adapter_tokens_per_s"] > 0
    assert heldout["base_tokens_per_s"] > 0
    assert summary["train_tokens_per_s"] == train["tokens_per_s"]
    assert summary["collect_sampling_tokens_per_s"] == collected["sampling_tokens_per_s"]


@pytest.mark.slow  # imports torch and transformers
@pytest.mark.parametrize(("shape", "billions"), [("qwen2-7b", 7.6), ("llama-7b", 6.7)])
def test_gpu_shapes_are_7b(check: ModuleType, shape: str, billions: float) -> None:
    import torch
    from transformers import AutoModelForCausalLM

    from benchmarks.gpu_check.common import SHAPES, model_config

    layers = SHAPES[shape]["num_hidden_layers"]
    config = model_config(shape, layers, vocab_at_least=1029, pad_id=0, eos_id=1)
    with torch.device("meta"):  # real widths, no memory
        model = AutoModelForCausalLM.from_config(config, dtype=torch.bfloat16)
    assert sum(p.numel() for p in model.parameters()) / 1e9 == pytest.approx(billions, abs=0.1)
