"""Benchmark the build-dataset flow end to end on the embedded default, with the tiny model.

    python benchmarks/flow_wall_time.py --files 200

A synthetic corpus of about ``--files`` run files; no Prefect server configured (a
local one is started) and no Ray address (a local Ray on every CPU). Reports the
whole command's wall time as a subprocess, and, from an in-process run, how much of
it is Prefect server start, Ray start, each flow stage, and the rest (Prefect's
engine, Ray workers and actors starting). The Prefect database is migrated once
beforehand (a first start on a fresh PREFECT_HOME takes ~25 s more; reported apart).
Writes bench-out/flow_wall_time.json.
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import subprocess
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
OUT = ROOT / "bench-out"
os.environ.setdefault("PREFECT_HOME", str(OUT / "prefect-home"))
os.environ.setdefault("AGIR_CACHE_DIR", str(OUT / "cache"))
os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.pop("PREFECT_API_URL", None)
os.environ.pop("RAY_ADDRESS", None)


def corpus(files: int) -> Path:
    from agir_retrain.tasks.synth.corpus import write_corpus

    folder = OUT / f"flow-corpus-{files}"
    if not (folder / "ground_truth.json").exists():
        runs = int(files * 2.2)
        while write_corpus(folder, runs=runs, seed=1).files < files:
            shutil.rmtree(folder)
            runs += 10
    return folder


def in_process(inputs: Path, out: Path) -> dict[str, float]:
    """One run with each start-up timed; returns seconds by part."""
    import ray

    from agir_retrain.flows.build_dataset import build_dataset
    from agir_retrain.flows.runtime import prefect_api, ray_task_runner
    from agir_retrain.tasks.settings.models import BuildDatasetConfig

    parts: dict[str, float] = {}
    start = time.perf_counter()
    with prefect_api():
        parts["prefect_server_start"] = time.perf_counter() - start
        mark = time.perf_counter()
        ray.init(num_cpus=os.cpu_count(), include_dashboard=False, object_store_memory=1 << 30)
        parts["ray_start"] = time.perf_counter() - mark
        mark = time.perf_counter()
        config = BuildDatasetConfig(inputs=[str(inputs)], out=str(out))
        result = build_dataset.with_options(task_runner=ray_task_runner(None, None))(config)
        parts["flow"] = time.perf_counter() - mark
        mark = time.perf_counter()
    parts["prefect_drain_and_stop"] = time.perf_counter() - mark
    ray.shutdown()
    for stage, seconds in result.report.timing_s.items():
        parts[f"stage_{stage}"] = seconds
    parts["flow_engine_and_workers_start"] = parts["flow"] - sum(result.report.timing_s.values())
    parts["total"] = time.perf_counter() - start
    return parts


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--files", type=int, default=200)
    args = parser.parse_args()
    folder = corpus(args.files)
    files = len(list((folder / "runs").glob("*.json")))
    size_mb = sum(p.stat().st_size for p in (folder / "runs").glob("*.json")) / 1e6

    start = time.perf_counter()  # migrate the Prefect database once (first start only)
    subprocess.run(
        [
            sys.executable,
            "-c",
            "from agir_retrain.flows.runtime import prefect_api\nwith prefect_api(): pass",
        ],
        check=True,
        cwd=ROOT,
    )
    migrate = time.perf_counter() - start
    # Make builtin:tiny once, outside the timings (as a user's first run would, once).
    subprocess.run(
        [
            sys.executable,
            "-c",
            "from agir_retrain.tasks.models.resolve import resolve_model; resolve_model('builtin:tiny')",
        ],
        check=True,
        cwd=ROOT,
    )

    shutil.rmtree(OUT / "flow-out-cli", ignore_errors=True)
    start = time.perf_counter()
    subprocess.run(
        [sys.executable, "-m", "agir_retrain.flows.cli", "dataset", str(folder / "runs"), "--out", str(OUT / "flow-out-cli")],
        check=True, cwd=ROOT, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
    )  # fmt: skip
    command_wall = time.perf_counter() - start

    shutil.rmtree(OUT / "flow-out", ignore_errors=True)
    parts = in_process(folder / "runs", OUT / "flow-out")
    row = {
        "files": files,
        "corpus_mb": round(size_mb, 1),
        "cores": os.cpu_count(),
        "command_wall_s": round(command_wall, 1),
        "prefect_first_start_with_migrations_s": round(migrate, 1),
        **{k: round(v, 2) for k, v in parts.items()},
        "prefect_and_ray_startup_s": round(
            parts["prefect_server_start"] + parts["ray_start"] + parts["prefect_drain_and_stop"], 2
        ),
    }
    print(json.dumps(row, indent=2))
    (OUT / "flow_wall_time.json").write_text(json.dumps(row, indent=2))


if __name__ == "__main__":
    main()
