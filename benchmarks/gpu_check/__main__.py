"""One GPU check: every GPU claim of the project measured in one short run.

    # here (PyPI reachable): the wheels the GPU machine lacks, then, on the GPU machine:
    bash benchmarks/fetch_gpu_wheels.sh
    pip install --no-index --no-deps .gpu-wheels/*.whl && python -m benchmarks.gpu_check --out $OUT/gpu-check

    # the same code paths at a tiny shape on the CPU (~1.5 minutes), as the test suite runs it
    python -m benchmarks.gpu_check --cpu-smoke --out /tmp/gpu-check-smoke

Parts, each in its own process with its own time limit (a part that fails or runs out of
time is recorded and the next one runs; what it measured before is kept):
  qlora_dpo   a random 7B-shaped model (real widths) is saved once in bf16 under --work;
              1. DPO through the training program, 4-bit base: peak memory, tokens/s per
              reference mode and max_length; ratio adapter/separate (target <= 0.6)
  lora_dpo    2. the same on a bf16 base (plain LoRA): ratio 4-bit/bf16
  sampling    3. the batched sampler (garbling, evaluation) against generate, 4-bit, bf16
  fsdp_qlora  4. FSDP-QLoRA (one process) writes an adapter, which is reloaded and checked
  grpo        5. bubblewrap probe; where it runs, 2 GRPO steps with the sandbox's reward on
              the short model (part 4's), fitted briefly so some programs run
  improve     6. one generation of the improve loop on the loop's own code (no Prefect, Ray
              or polars): the reference agent collects (bwrap), SFT steps through the
              training program, the model collects with its new adapter (CompletionSampler,
              waves, bwrap episodes) and samples the held-out tasks: generation and
              training speed on the short model (part 4's), fitted briefly so it writes code
Writes DIR/gpu_check.json (machine, versions, date, every figure) and DIR/logs/, and
prints one table last. See docs/gpu-check.md.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import shutil
import signal
import subprocess
import sys
import time
from datetime import UTC, datetime
from importlib import metadata
from pathlib import Path
from typing import Any

from benchmarks.gpu_check.common import MODES, ROOT, SHAPES, Plan, Results
from benchmarks.gpu_check.part import PARTS
from benchmarks.gpu_check.report import render_table, summarise

# Absent on the GPU machine: the smoke run blocks them too, so an import of one shows here.
ABSENT_ON_GPU = ("polars", "orjson", "prefect", "ray")
PACKAGES = ("torch", "transformers", "trl", "peft", "accelerate", "bitsandbytes", "datasets",
            "pydantic", "pandas", "pyarrow", "huggingface_hub", "agir-retrain")  # fmt: skip
# Run order: the headline figures first, so a short window still gets them.
ORDER = ("qlora_dpo", "fsdp_qlora", "sampling", "grpo", "lora_dpo", "improve")
# grpo: ~15 s of imports, the short model's fit (~25 s) and 4-bit load, 2 steps, the outputs.
# improve: imports, the fit (~15 s), a 4-bit load and 6 SFT steps, a bf16 load and ~2,000
# decode steps over the collection's waves and the held-out samples (docs/gpu-check.md).
GPU_TIMEOUTS_S = {"qlora_dpo": 330, "fsdp_qlora": 90, "sampling": 90, "grpo": 150, "lora_dpo": 130, "improve": 150}  # fmt: skip
# Generous: on a shared 2-core machine one import of torch + TRL can take a minute.
SMOKE_TIMEOUTS_S = dict.fromkeys(PARTS, 300)


def make_plan(args: argparse.Namespace) -> Plan:
    """The plan from the flags: a 7B-shaped run, or the tiny smoke run."""
    smoke = args.cpu_smoke
    return Plan(
        smoke=smoke,
        shape="tiny" if smoke else args.shape,
        layers=args.layers,
        short_layers=2,
        work=str(Path(args.work).resolve()),
        lengths=tuple(args.lengths or ((128,) if smoke else (1024, 2048))),
        steps=args.steps if args.steps else (2 if smoke else 3),
        modes=tuple(args.modes or MODES),
        bf16_modes=tuple(args.bf16_modes or (("adapter",) if smoke else ("adapter", "separate"))),
        sample_requests=4 if smoke else 32,
        sample_single=1 if smoke else 4,
        new_tokens=8 if smoke else 64,
        part_timeouts_s=SMOKE_TIMEOUTS_S if smoke else GPU_TIMEOUTS_S,
    )


def blocked_imports_path(work: Path, names: tuple[str, ...]) -> Path:
    """A folder whose sitecustomize makes ``import NAME`` fail, as on a machine without it."""
    folder = work / "blocked-imports"
    folder.mkdir(parents=True, exist_ok=True)
    (folder / "sitecustomize.py").write_text(
        "import sys\n\n"
        "# The GPU check's emulation of a machine that lacks these packages.\n"
        f"for _name in {list(names)!r}:\n    sys.modules[_name] = None\n"
    )
    return folder


def source_shim(work: Path) -> Path:
    """A folder where ``agir_retrain.{tasks,flows,container}`` are this tree's own folders.

    First on the parts' path, so they run the working tree's code even where an older
    wheel of the project is installed (the GPU machine gets one from fetch_gpu_wheels.sh).
    """
    folder = work / "source-shim"
    package = folder / "agir_retrain"  # a namespace package, as installed
    package.mkdir(parents=True, exist_ok=True)
    for name in ("tasks", "flows", "container"):
        link = package / name
        if not link.is_symlink() or link.resolve() != (ROOT / name).resolve():
            link.unlink(missing_ok=True)
            link.symlink_to(ROOT / name, target_is_directory=True)
    return folder


def child_env(plan: Plan, block: tuple[str, ...]) -> dict[str, str]:
    """The parts' environment: offline, this tree's code first, some packages blocked."""
    env = os.environ.copy()
    paths = [str(source_shim(Path(plan.work))), str(ROOT)]
    if block:
        paths.insert(0, str(blocked_imports_path(Path(plan.work), block)))
    env["PYTHONPATH"] = os.pathsep.join([*paths, env.get("PYTHONPATH", "")]).rstrip(os.pathsep)
    env.setdefault("HF_HUB_OFFLINE", "1")
    env.setdefault("TOKENIZERS_PARALLELISM", "false")
    if plan.smoke:
        # One torch thread on the CPU: beside another busy process on a shared 2-core machine,
        # two threads spin at torch's barriers (improve's 100-step fit: 217 s with two, 15 s
        # with one; the whole smoke run 3 min with two, 1 min 20 s with one, measured here).
        env.setdefault("OMP_NUM_THREADS", "1")
    return env


def run_part(
    name: str, plan: Plan, out: Path, env: dict[str, str], limit_s: float
) -> dict[str, Any]:
    """Run one part in its own process group within ``limit_s``; its rows and status."""
    logs = out / "logs"
    results = Results(logs / f"{name}.jsonl")
    results.path.unlink(missing_ok=True)
    command = [sys.executable, "-m", "benchmarks.gpu_check.part", name, plan.to_json(), str(results.path), str(logs)]  # fmt: skip
    started = time.perf_counter()
    with (logs / f"{name}.log").open("w") as log:
        process = subprocess.Popen(command, cwd=ROOT, env=env, stdout=log, stderr=subprocess.STDOUT, start_new_session=True)  # fmt: skip
        try:
            code: int | None = process.wait(timeout=limit_s)
        except subprocess.TimeoutExpired:
            os.killpg(process.pid, signal.SIGKILL)  # the part and anything it launched
            process.wait(timeout=30)
            code = None
    rows = results.read()
    part: dict[str, Any] = {"wall_s": round(time.perf_counter() - started, 1), "limit_s": round(limit_s), "rows": rows}  # fmt: skip
    if code is None:
        part |= {"status": "timed_out", "reason": f"stopped after its limit of {limit_s:.0f} s"}
    elif code != 0:
        tail = (logs / f"{name}.log").read_text(errors="replace").strip().splitlines()[-4:]
        part |= {"status": "failed", "reason": f"exited {code}: " + " | ".join(tail)}
    else:
        part |= part_status(rows)
    return part


def part_status(rows: list[dict[str, Any]]) -> dict[str, str]:
    """A finished part's status from its rows: ok, partial, failed, or why it measured nothing."""
    statuses = {row["status"] for row in rows}
    reasons = list(
        dict.fromkeys(row["reason"] for row in rows if row["status"] != "ok" and "reason" in row)
    )
    if not rows:
        return {"status": "failed", "reason": "the part recorded nothing"}
    if statuses == {"ok"}:
        return {"status": "ok"}
    if "failed" in statuses:
        return {"status": "partial" if "ok" in statuses else "failed", "reason": "; ".join(reasons)}
    # Nothing failed, but a measurement could not be made here (e.g. GRPO not in the tree yet).
    unmade = next(status for status in statuses if status != "ok")
    return {"status": unmade, "reason": "; ".join(reasons)}


# Asked of a fresh interpreter with the parts' environment: the GPU, and whether each package
# the parts need imports there (an old pyarrow under datasets shows here, not mid-part).
_PROBE = """
import importlib, json, torch
imports = {}
for name in ("trl", "bitsandbytes", "datasets", "pydantic", "peft", "pandas", "accelerate"):
    try:
        importlib.import_module(name)
        imports[name] = "ok"
    except Exception as error:
        imports[name] = f"{type(error).__name__}: {error}"[:300]
g = torch.cuda.is_available()
print(json.dumps({
    "gpu": torch.cuda.get_device_name() if g else None,
    "gpu_memory_gb": round(torch.cuda.get_device_properties(0).total_memory / 2**30, 1) if g else None,
    "cuda": torch.version.cuda, "bf16": g and torch.cuda.is_bf16_supported(), "imports": imports,
}))
"""


def machine(env: dict[str, str]) -> dict[str, Any]:
    """The machine, its GPU and the package versions, asked of a fresh interpreter."""
    found = subprocess.run([sys.executable, "-c", _PROBE], capture_output=True, text=True, env=env, timeout=300, check=False)  # fmt: skip
    gpu = (
        json.loads(found.stdout) if found.returncode == 0 else {"probe_error": found.stderr[-300:]}
    )
    versions = {"python": platform.python_version()}
    for name in PACKAGES:
        try:
            versions[name] = metadata.version(name)
        except metadata.PackageNotFoundError:
            versions[name] = None
    commit = None
    if shutil.which("git"):  # the device tool's copy may have no git, or no .git
        found = subprocess.run(["git", "rev-parse", "--short", "HEAD"], cwd=ROOT, capture_output=True, text=True, check=False)  # fmt: skip
        commit = found.stdout.strip() or None
    return {
        "host": platform.node(),
        "platform": platform.platform(),
        "cpus": os.cpu_count(),
        **gpu,
        "versions": versions,
        "commit": commit,
    }


def make_parser() -> argparse.ArgumentParser:
    """The check's flags."""
    parser = argparse.ArgumentParser(prog="python -m benchmarks.gpu_check", description=__doc__.splitlines()[0])  # fmt: skip
    parser.add_argument("--out", required=True, help="folder for gpu_check.json and logs/")
    parser.add_argument(
        "--cpu-smoke", action="store_true", help="tiny shape on the CPU (~1.5 minutes)"
    )
    parser.add_argument("--work", default=str(ROOT / "bench-out" / "gpu-check"), help="models, data and runs (kept between runs, reused)")  # fmt: skip
    parser.add_argument("--shape", choices=[s for s in SHAPES if s != "tiny"], default="qwen2-7b")
    parser.add_argument("--layers", type=int, help="fewer layers than the shape's (same widths)")
    parser.add_argument("--lengths", type=int, nargs="+", help="DPO max_length values")
    parser.add_argument("--steps", type=int, help="DPO steps per run, 2 or more (the first is not timed); 3 on a GPU, 2 in the smoke run")  # fmt: skip
    parser.add_argument("--modes", nargs="+", choices=MODES, help="reference modes, 4-bit")
    parser.add_argument("--bf16-modes", nargs="+", choices=MODES, help="reference modes, bf16")
    parser.add_argument("--parts", nargs="+", choices=PARTS, help="only these parts")
    parser.add_argument("--budget-s", type=float, default=530, help="wall time for all parts together")  # fmt: skip
    parser.add_argument("--allow-imports", action="store_true", help="do not block " + ", ".join(ABSENT_ON_GPU))  # fmt: skip
    return parser


def main(argv: list[str] | None = None) -> dict[str, Any]:
    """Run the parts in order within the budget, write the JSON, print the table."""
    args = make_parser().parse_args(argv)
    if args.steps is not None and args.steps < 2:
        raise SystemExit("--steps must be 2 or more: the first step is not timed")
    plan = make_plan(args)
    out = Path(args.out)
    (out / "logs").mkdir(parents=True, exist_ok=True)
    Path(plan.work).mkdir(parents=True, exist_ok=True)
    env = child_env(plan, () if args.allow_imports else ABSENT_ON_GPU)
    report: dict[str, Any] = {
        "check": "agir-retrain gpu check",
        "mode": "cpu-smoke" if plan.smoke else "gpu",
        "date": datetime.now(UTC).isoformat(timespec="seconds"),
        "blocked_imports": [] if args.allow_imports else list(ABSENT_ON_GPU),
        "plan": json.loads(plan.to_json()),
        "machine": machine(env),
        "parts": {},
    }
    deadline = time.monotonic() + args.budget_s
    for name in ORDER:
        if args.parts and name not in args.parts:
            continue
        left = deadline - time.monotonic()
        if left < 5:
            report["parts"][name] = {"status": "skipped", "reason": f"the budget of {args.budget_s:.0f} s was spent", "rows": []}  # fmt: skip
            continue
        limit = min(plan.part_timeouts_s.get(name, 120), left)
        print(f"gpu check: {name} (limit {limit:.0f} s)", flush=True)
        report["parts"][name] = run_part(name, plan, out, env, limit)
        _write(out, report)
    report["summary"] = summarise(report["parts"])
    _write(out, report)
    render_table(report)
    return report


def _write(out: Path, report: dict[str, Any]) -> None:
    staging = out / ".gpu_check.json.tmp"
    staging.write_text(json.dumps(report, indent=2, default=str))
    os.replace(staging, out / "gpu_check.json")


if __name__ == "__main__":
    main()
