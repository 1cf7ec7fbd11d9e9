"""Benchmark `agir-retrain ingest` against the orjson ceiling and a plain reader, in one run.

    python benchmarks/ingest_throughput.py                 # 200 MB and 2 GB corpora
    python benchmarks/ingest_throughput.py --sizes-mb 200 --repeats 3

For each corpus size it reports, side by side:
- the whole `agir-retrain ingest` command (a subprocess, start-up included): MB/s,
  runs/s, and peak RSS summed over its process tree, sampled every 50 ms;
- the ceiling: plain `orjson.loads` over the same bytes, on one core and on every core;
- a baseline: a straightforward stdlib-json-and-loops reader writing the same three
  tables with polars (on the first 200 MB only: it is slow).
Results go to stdout and to bench-out/ingest_throughput.json.
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys
import time
from concurrent.futures import ProcessPoolExecutor
from pathlib import Path

import orjson
import polars as pl
import psutil

ROOT = Path(__file__).resolve().parent.parent
OUT = ROOT / "bench-out"
CLI = [sys.executable, "-m", "agir_retrain.flows.cli"]
ENV_KIB = 32  # pasted container listings per file: ~0.75 MB files, as real runs are
RUNS_PER_MB = 3.2  # with ENV_KIB, about this many runs make a megabyte


def corpus(size_mb: int) -> Path:
    """A synthetic corpus of at least ``size_mb`` MB, made once and reused."""
    folder = OUT / f"corpus-{size_mb}mb"
    if not (folder / "ground_truth.json").exists():
        runs = int(size_mb * RUNS_PER_MB)
        subprocess.run(
            [*CLI, "synth", "--out", str(folder), "--runs", str(runs), "--seed", "0",
             "--env-kib", str(ENV_KIB)],
            check=True, cwd=ROOT,
        )  # fmt: skip
    return folder


def corpus_files(folder: Path) -> list[Path]:
    return sorted((folder / "runs").glob("*.json"))


def run_ingest(folder: Path, out: Path) -> tuple[float, int]:
    """Run the ingest command; return its wall time and the peak RSS of its process tree."""
    out.mkdir(parents=True, exist_ok=True)
    start = time.perf_counter()
    process = psutil.Popen(
        [*CLI, "ingest", str(folder / "runs"), "--out", str(out)],
        cwd=ROOT, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
    )  # fmt: skip
    peak = 0
    while process.poll() is None:
        try:
            tree = [process, *process.children(recursive=True)]
            peak = max(peak, sum(p.memory_info().rss for p in tree if p.is_running()))
        except psutil.Error:
            pass
        time.sleep(0.05)
    elapsed = time.perf_counter() - start
    if process.returncode != 0:
        raise SystemExit(f"ingest failed with exit status {process.returncode}")
    return elapsed, peak


def _parse(path: Path) -> int:
    data = path.read_bytes()
    try:
        orjson.loads(data)
    except orjson.JSONDecodeError:
        pass
    return len(data)


def orjson_ceiling(files: list[Path], workers: int) -> float:
    """MB/s at which plain orjson.loads parses the corpus (files already in page cache)."""
    start = time.perf_counter()
    if workers == 1:
        total = sum(_parse(f) for f in files)
    else:
        with ProcessPoolExecutor(workers) as pool:
            total = sum(pool.map(_parse, files, chunksize=8))
    return total / 1e6 / (time.perf_counter() - start)


def plain_reader(files: list[Path], out: Path) -> float:
    """MB/s of a straightforward reader: stdlib json, dict rows, polars infers, parquet."""
    start = time.perf_counter()
    runs, scored, pairs = [], [], []
    total = 0
    for path in files:
        raw = path.read_bytes()
        total += len(raw)
        try:
            document = json.loads(raw.decode("utf-8"))
            agents = document.get("copy_strat_agents") or document.get("strat_agents") or []
        except (ValueError, AttributeError):
            continue
        for index, agent in enumerate(agents):
            if not isinstance(agent, dict):
                continue
            history = agent.get("tagged_chat_history") or []
            messages = [{"role": e[0]["role"], "content": e[0]["content"]} for e in history
                        if isinstance(e, list) and len(e) == 2 and isinstance(e[0], dict)]  # fmt: skip
            tags = [e[1] for e in history if isinstance(e, list) and len(e) == 2]
            attempts = [m for m, t in zip(messages, tags, strict=False) if str(t).startswith(("genned_strat_code", "strat_codegen"))]  # fmt: skip
            run_id = f"{path.stem}#{index}"
            runs.append({"run_id": run_id, "strategy_prompt": messages[:4], "code_prompt": messages,
                         "strategy": str(agent.get("chosen_strat"))})  # fmt: skip
            for i, attempt in enumerate(attempts):
                scored.append({"run_id": run_id, "attempt": i, "response": attempt["content"]})
                if i:
                    pairs.append({"run_id": run_id, "prompt": messages, "chosen": attempts[-1]["content"],
                                  "rejected": attempt["content"]})  # fmt: skip
    out.mkdir(parents=True, exist_ok=True)
    for name, rows in (("runs", runs), ("scored", scored), ("pairs", pairs)):
        pl.DataFrame(rows).write_parquet(out / f"{name}.parquet")
    return total / 1e6 / (time.perf_counter() - start)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--sizes-mb", default="200,2000", help="corpus sizes, comma-separated")
    parser.add_argument("--repeats", type=int, default=3, help="ingest runs per size (median)")
    args = parser.parse_args()
    cores = os.cpu_count() or 1
    results = []
    baseline_mb_s = None
    for size in (int(s) for s in args.sizes_mb.split(",")):
        folder = corpus(size)
        files = corpus_files(folder)
        total_mb = sum(f.stat().st_size for f in files) / 1e6
        truth = json.loads((folder / "ground_truth.json").read_text())["totals"]
        for f in files:  # warm the page cache so every reader sees the same conditions
            f.read_bytes()
        timings = [run_ingest(folder, OUT / f"ingest-{size}mb") for _ in range(args.repeats)]
        wall = statistics.median(t for t, _ in timings)
        peak_rss = max(rss for _, rss in timings)
        ceiling_1 = orjson_ceiling(files, 1)
        ceiling_n = orjson_ceiling(files, cores)
        if baseline_mb_s is None:
            subset, budget = [], 0
            for f in files:
                subset.append(f)
                budget += f.stat().st_size
                if budget >= 200e6:
                    break
            baseline_mb_s = plain_reader(subset, OUT / "plain-reader")
        row = {
            "corpus_mb": round(total_mb, 1),
            "files": len(files),
            "runs": truth["runs_in"],
            "cores": cores,
            "ingest_wall_s": round(wall, 2),
            "ingest_wall_s_all": [round(t, 2) for t, _ in timings],
            "ingest_mb_s": round(total_mb / wall, 1),
            "ingest_runs_s": round(truth["runs_in"] / wall, 1),
            "peak_rss_mb": round(peak_rss / 1e6, 1),
            "orjson_1_core_mb_s": round(ceiling_1, 1),
            f"orjson_{cores}_cores_mb_s": round(ceiling_n, 1),
            "plain_reader_mb_s": round(baseline_mb_s, 1),
            "ingest_vs_plain_reader": round(total_mb / wall / baseline_mb_s, 1),
            "ingest_vs_orjson_all_cores": round(total_mb / wall / ceiling_n, 2),
        }
        results.append(row)
        print(json.dumps(row, indent=2), flush=True)
    OUT.mkdir(exist_ok=True)
    (OUT / "ingest_throughput.json").write_text(json.dumps(results, indent=2))


if __name__ == "__main__":
    main()
