"""Part 5: GRPO steps with the environment's reward, where bubblewrap runs.

The sandbox is probed first (``bwrap --version`` and a trial program in a bare tree, then
the project's own ``BwrapSandbox`` check), so the figures say whether episodes could run
on this machine at all; where they cannot, the ``grpo`` row is ``skipped`` with the
probe's reason. Otherwise, on the short model of the plan's widths (the one part 4 uses;
the full 7B model samples too slowly for the window), as ``tests/training`` does it
honestly:

1. every weight is fitted briefly (plain next-token loss on a few program-writing rows),
   so that some sampled programs run and rewards can differ within a group;
2. GRPO runs through the training program's public ``prepare``/``run`` (4-bit base,
   LoRA, a KL reference), each completion's program run in a fresh copy of a small
   scenario by the sandbox, the episodes of a step spread over local processes.

It records steps, episodes (they must equal prompts x generations x steps), the reward's
mean and spread, the share of programs that ran, seconds per step, and peak GPU memory.
"""

from __future__ import annotations

import hashlib
import json
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

from benchmarks.gpu_check.common import Plan, Results, build_model, cuda, peak_gb, release_gpu

GRPO_MODULE = "agir_retrain.tasks.training.grpo"
PROMPTS, GENERATIONS, STEPS = 2, 4, 2  # per step: 2 prompts x 4 completions = 8 episodes
PROGRAM = "```python\nimport os\nos.remove('/var/cache/apt/archives/foo.deb')\n```"
FIT_ROWS = 4
FIT_STEPS = 60
SCENARIO = {
    "name": "gpu-check-small",
    "seed": 3,
    "files": [
        {"path": "/var/cache/apt/archives/foo.deb", "bytes": 3000, "kind": "junk"},
        {"path": "/tmp/scratch/tmp.bin", "bytes": 1000, "kind": "junk"},
        {"path": "/etc/app/app.conf", "bytes": 50, "kind": "protected"},
    ],
}


def probe_bwrap() -> dict[str, Any]:
    """Whether bubblewrap is installed and can run a program in a bare tree without network."""
    path = shutil.which("bwrap")
    if path is None:
        return {"bwrap": None, "runs": False, "reason": "bwrap is not installed on this machine"}
    # Only /usr is bound into the sandbox: the trial needs a Python from there.
    python = next((c for c in (sys.executable, "/usr/bin/python3") if c.startswith("/usr/") and Path(c).exists()), None)  # fmt: skip
    version = subprocess.run(
        [path, "--version"], capture_output=True, text=True, timeout=10, check=False
    )
    with tempfile.TemporaryDirectory() as scratch:
        (Path(scratch) / "victim.txt").write_text("x")
        program = (
            "import os, socket\n"
            "os.remove('/var/victim.txt')\n"
            "try:\n    socket.create_connection(('1.1.1.1', 53), timeout=1); print('net')\n"
            "except OSError:\n    print('no-net')\n"
        )
        command = [
            path, "--unshare-all", "--die-with-parent", "--ro-bind", "/usr", "/usr",
            "--symlink", "usr/lib", "/lib", "--symlink", "usr/lib64", "/lib64",
            "--symlink", "usr/bin", "/bin", "--proc", "/proc", "--dev", "/dev", "--tmpfs", "/tmp",
            "--bind", scratch, "/var", python or "/usr/bin/python3", "-c", program,
        ]  # fmt: skip
        started = time.perf_counter()
        trial = subprocess.run(command, capture_output=True, text=True, timeout=30, check=False)
        wall = time.perf_counter() - started
        deleted = not (Path(scratch) / "victim.txt").exists()
    runs = trial.returncode == 0 and deleted and trial.stdout.strip() == "no-net"
    row: dict[str, Any] = {
        "bwrap": path,
        "version": version.stdout.strip() or version.stderr.strip(),
        "runs": runs,
        "trial_s": round(wall, 3),
    }
    if python is None:
        row["reason"] = (
            f"no Python under /usr to run in the sandbox ({sys.executable} is elsewhere)"
        )
    elif not runs:
        row["reason"] = (
            f"trial exited {trial.returncode}, deleted={deleted}, "
            f"stdout={trial.stdout.strip()!r}, stderr={trial.stderr.strip()[-300:]!r}"
        )
    return row


def sandbox_reason(interpreter: str) -> str | None:
    """Why the project's bubblewrap sandbox cannot run here, or None when it can."""
    from agir_retrain.tasks.environment.sandbox import SandboxError
    from agir_retrain.tasks.environment.sandbox_bwrap import BwrapSandbox

    try:
        BwrapSandbox(interpreter)
    except SandboxError as error:
        return str(error)
    return None


def write_grpo_data(plan: Plan) -> tuple[Path, Path]:
    """The SFT rows GRPO takes its code prompts from, and the scenario file they are bound to."""
    folder = Path(plan.work) / "grpo-data"
    rows = [
        {
            "prompt": [{"role": "user", "content": f"Free space on the disk, task {i}."}],
            "completion": [{"role": "assistant", "content": PROGRAM}],
            "prompt_kind": "code",
            "run_id": f"r{i}",
        }
        for i in range(FIT_ROWS)
    ]
    (folder / "sft").mkdir(parents=True, exist_ok=True)
    (folder / "sft" / "train.jsonl").write_text("".join(json.dumps(r) + "\n" for r in rows))
    scenario = folder / "scenario.json"
    scenario.write_text(json.dumps(SCENARIO, indent=2) + "\n")
    return folder, scenario


def fit_policy(
    plan: Plan,
    base: Path,
    data: Path,
    *,
    name: str = "grpo",
    max_rows: int | None = None,
    steps: int = FIT_STEPS,
    completion_only: bool = False,
) -> dict[str, Any]:
    """Fit every weight of ``base`` to the rows of ``data/sft/train.jsonl`` (Adam), once; save
    it beside ``base`` as ``<base>-<name>-fitted`` (reused while the rows are the same).

    A random model writes no program that runs: every reward of a group would be equal,
    and no collected attempt would reach the sandbox. After a brief fit some samples run
    (not asserted here: the loss and the ran share say how well it took on this shape).
    ``completion_only`` puts the loss on the completions alone and, on a GPU, computes in
    bf16 autocast (the agent's prompts are ~1,000 tokens: float32 would take ~0.5 s a step
    at the real widths).
    """
    import torch
    from transformers import AutoModelForCausalLM, AutoTokenizer

    folder = base.with_name(f"{base.name}-{name}-fitted")
    rows = [json.loads(line) for line in (data / "sft" / "train.jsonl").read_text().splitlines()]
    rows = rows[:max_rows]
    digest = hashlib.sha256(json.dumps([rows, steps], sort_keys=True).encode()).hexdigest()[:16]
    if (folder / "fit.json").exists():
        saved = json.loads((folder / "fit.json").read_text())
        if saved.get("rows_sha256", digest) == digest:
            return {"folder": str(folder), "reused": True, **saved}
    started = time.perf_counter()
    device = "cuda" if cuda() else "cpu"
    torch.manual_seed(0)
    tokenizer = AutoTokenizer.from_pretrained(base)
    model = AutoModelForCausalLM.from_pretrained(base, dtype=torch.float32).to(device)
    batch, labels = _fit_batch(tokenizer, rows, completion_only=completion_only)
    batch, labels = batch.to(device), labels.to(device)
    # The tiny model learns at 3e-3 in 60 steps (tests/training); wide layers sum many more
    # inputs, so a smaller rate and clipped gradients keep their activations in range.
    optimizer = torch.optim.Adam(model.parameters(), lr=3e-3 if plan.smoke else 1e-3)
    autocast = torch.autocast("cuda", dtype=torch.bfloat16, enabled=completion_only and cuda())
    losses = []
    for _ in range(steps):
        with autocast:
            loss = model(**batch, labels=labels).loss
        loss.backward()
        torch.nn.utils.clip_grad_norm_(model.parameters(), 1.0)
        optimizer.step()
        optimizer.zero_grad()
        losses.append(loss.item())
    staging = folder.with_name(f".{folder.name}.tmp")
    shutil.rmtree(staging, ignore_errors=True)
    model.to(torch.bfloat16).save_pretrained(staging, max_shard_size="4GB")
    tokenizer.save_pretrained(staging)
    fit = {"fit_steps": steps, "fit_rows": len(rows), "fit_loss_first": round(losses[0], 4),
           "fit_loss_last": round(losses[-1], 4), "rows_sha256": digest}  # fmt: skip
    (staging / "fit.json").write_text(json.dumps(fit))
    del model, optimizer
    release_gpu()
    shutil.rmtree(folder, ignore_errors=True)
    staging.rename(folder)
    return {"folder": str(folder), "reused": False, "fit_s": round(time.perf_counter() - started, 1), **fit}  # fmt: skip


def _fit_batch(tokenizer: Any, rows: list[dict[str, Any]], *, completion_only: bool) -> tuple[Any, Any]:  # fmt: skip
    """The rows as one padded batch, and its labels: -100 on padding, and on the prompts
    when ``completion_only`` (the batch is then padded on the right, so prompts come first)."""
    texts = [tokenizer.apply_chat_template(r["prompt"] + r["completion"], tokenize=False) for r in rows]  # fmt: skip
    if not completion_only:
        batch = tokenizer(texts, return_tensors="pt", padding=True)
        return batch, batch["input_ids"].masked_fill(batch["attention_mask"] == 0, -100)
    side, tokenizer.padding_side = tokenizer.padding_side, "right"
    batch = tokenizer(texts, return_tensors="pt", padding=True, add_special_tokens=False)
    tokenizer.padding_side = side  # the tokenizer is saved with the fitted model as it was
    labels = batch["input_ids"].masked_fill(batch["attention_mask"] == 0, -100)
    for i, row in enumerate(rows):
        prompt = tokenizer.apply_chat_template(row["prompt"], tokenize=False, add_generation_prompt=True)  # fmt: skip
        labels[i, : len(tokenizer(prompt, add_special_tokens=False)["input_ids"])] = -100
    return batch, labels


def step_clock() -> Any:
    """A trainer callback noting when each optimizer step begins and ends (GPU synchronised)."""
    from transformers import TrainerCallback

    def now() -> float:
        if cuda():
            import torch

            torch.cuda.synchronize()
        return time.perf_counter()

    class StepClock(TrainerCallback):
        def __init__(self) -> None:
            self.seconds: list[float] = []
            self.began = 0.0

        def on_step_begin(self, args: Any, state: Any, control: Any, **kwargs: Any) -> None:
            self.began = now()

        def on_step_end(self, args: Any, state: Any, control: Any, **kwargs: Any) -> None:
            self.seconds.append(now() - self.began)

    return StepClock()


def train_grpo(plan: Plan, policy: Path, data: Path, scenario: Path, interpreter: str) -> dict[str, Any]:  # fmt: skip
    """GRPO steps through the training program's ``prepare`` and ``run``; what they did."""
    from agir_retrain.tasks.settings.models import TrainConfig
    from agir_retrain.tasks.training.program import prepare, run

    out = Path(plan.work) / "runs" / "grpo"
    shutil.rmtree(out, ignore_errors=True)
    config = TrainConfig(
        dataset=str(data),
        base_model=str(policy),
        out=str(out),
        objective="grpo",
        grpo={
            "max_steps": STEPS, "batch_size": PROMPTS, "gradient_accumulation": 1,
            "num_generations": GENERATIONS, "max_completion_length": 48, "max_prompt_length": 64,
            "learning_rate": 1e-3, "scenarios": [str(scenario)], "save_steps": 1_000_000,
            "workers": 2 if plan.smoke else 4,
            "environment": {"backend": "bwrap", "interpreter": interpreter,
                            "limits": {"wall_s": 5, "memory_mb": 256, "processes": 32, "file_size_mb": 4}},
        },
    )  # fmt: skip
    before = release_gpu()
    started = time.perf_counter()
    prepared = prepare(config)
    prepare_s = time.perf_counter() - started
    reward = prepared.trainer.reward_funcs[0]
    clock = step_clock()
    prepared.trainer.add_callback(clock)
    result = run(prepared)
    peak = peak_gb()
    rewards = [step["episodes/reward_mean"] for step in reward.steps]
    spreads = [step["episodes/reward_spread"] for step in reward.steps]
    row = {
        "steps": result.metrics.train.global_step,
        "prompts_per_step": PROMPTS,
        "generations": GENERATIONS,
        "episodes": reward.episodes,
        "episodes_expected": PROMPTS * GENERATIONS * STEPS,
        "ran": reward.ran,
        "ran_share": round(reward.ran / reward.episodes, 4) if reward.episodes else None,
        "reward_mean": [round(r, 4) for r in rewards],
        "reward_spread": [round(r, 4) for r in spreads],
        "step_s": [round(s, 2) for s in clock.seconds],
        # The first step holds one-off CUDA and allocator warm-up.
        "seconds_per_step": round(statistics.fmean(clock.seconds[1:] or clock.seconds), 2),
        "peak_gpu_memory_gb": peak,
        "allocated_before_gb": before,
        "run_peak_gpu_memory_gb": None if peak is None else round(peak - (before or 0.0), 3),
        "quantized": config.quantize,
        "adapter_saved": (out / "adapter_model.safetensors").is_file(),
        "prepare_s": round(prepare_s, 1),
    }
    del prepared, result
    release_gpu()
    return row


def run_grpo(plan: Plan, results: Results) -> None:
    """Probe the sandbox; where it runs, fit the short model briefly and run GRPO steps."""
    from agir_retrain.tasks.settings.environment import EnvironmentSettings

    with results.attempt("sandbox") as row:
        row.update(probe_bwrap())
    probe = row
    interpreter = EnvironmentSettings().interpreter
    if probe.get("runs"):
        reason = sandbox_reason(interpreter)
    else:
        reason = probe.get("reason") or "the probe itself failed (see the sandbox row)"
    if reason:
        results.add(kind="grpo", status="skipped", reason=f"bubblewrap cannot run episodes here: {reason}")  # fmt: skip
        return
    data, scenario = write_grpo_data(plan)
    with results.attempt("grpo_fit", layers=plan.short_layers) as row:
        base = Path(build_model(plan, short=True)["folder"])
        row.update(fit_policy(plan, base, data))
    if "folder" not in row:
        return  # the fit failed, and its row says why
    with results.attempt("grpo", layers=plan.short_layers) as grpo:
        grpo.update(train_grpo(plan, Path(row["folder"]), data, scenario, interpreter))
