"""Benchmark `agir-retrain ingest` on v5 corpora (one small file per record) against orjson.

    python benchmarks/v5_ingest_throughput.py                      # 25,000 and 100,000 records
    python benchmarks/v5_ingest_throughput.py --records 100000 --repeats 1

For each corpus size it reports, side by side:
- the whole `agir-retrain ingest` command (a subprocess, start-up included): files/s,
  records/s, runs (chains)/s, and peak RSS summed over its process tree, sampled every 50 ms;
- the ceiling: plain `orjson.loads` over the same files (read + parse), on one core and on
  every core, in the same run.
Two sizes show how memory grows with the corpus: forming chains holds one range of
agent runs at a time (`chain_parts.RANGE_BYTES`), not the corpus.
Results go to stdout and to bench-out/v5_ingest_throughput.json.
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
import psutil

ROOT = Path(__file__).resolve().parent.parent
OUT = ROOT / "bench-out"
CLI = [sys.executable, "-m", "agir_retrain.flows.cli"]
FILES_PER_CHAIN = 2.4  # the v5 synth leaves about this many files per chain planned


def corpus(records: int) -> Path:
    """A synthetic v5 corpus of at least ``records`` files, made once and reused."""
    folder = OUT / f"v5-corpus-{records}"
    if not (folder / "ground_truth.json").exists():
        runs = int(records / FILES_PER_CHAIN) + 1
        subprocess.run(
            [*CLI, "synth", "--out", str(folder), "--runs", str(runs), "--seed", "0",
             "--format", "v5"],
            check=True, cwd=ROOT,
        )  # fmt: skip
    return folder


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


def _parse_many(paths: list[Path]) -> int:
    for path in paths:
        try:
            orjson.loads(path.read_bytes())
        except orjson.JSONDecodeError:  # the corpus's malformed files: parsing them is the work
            pass
    return len(paths)


def orjson_ceiling(files: list[Path], workers: int) -> float:
    """Files/s at which plain read + orjson.loads gets through the corpus (page cache warm)."""
    start = time.perf_counter()
    if workers == 1:
        _parse_many(files)
    else:
        chunks = [files[i : i + 512] for i in range(0, len(files), 512)]
        with ProcessPoolExecutor(workers) as pool:
            sum(pool.map(_parse_many, chunks))
    return len(files) / (time.perf_counter() - start)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--records", default="25000,100000", help="corpus sizes, comma-separated")
    parser.add_argument("--repeats", type=int, default=1, help="ingest runs per size (median)")
    args = parser.parse_args()
    cores = os.cpu_count() or 1
    results = []
    for size in (int(s) for s in args.records.split(",")):
        folder = corpus(size)
        files = sorted((folder / "runs").glob("*.json"))
        _parse_many(files)  # warm the page cache for every measurement alike
        single = orjson_ceiling(files, 1)
        every = orjson_ceiling(files, cores)
        timings, peaks = [], []
        for repeat in range(args.repeats):
            elapsed, peak = run_ingest(folder, OUT / f"v5-out-{size}-{repeat}")
            timings.append(elapsed)
            peaks.append(peak)
        elapsed = statistics.median(timings)
        report = json.loads((OUT / f"v5-out-{size}-0" / "report.json").read_text())
        truth = json.loads((folder / "ground_truth.json").read_text())["totals"]
        if report["runs_in"] != truth["runs_in"] or report["files_in"] != truth["files_in"]:
            raise SystemExit(f"ingest disagrees with the ground truth on {folder}")
        row = {
            "records": len(files),
            "bytes": sum(f.stat().st_size for f in files),
            "chains": report["runs_in"],
            "ingest_s": round(elapsed, 2),
            "ingest_files_per_s": round(len(files) / elapsed),
            "ingest_runs_per_s": round(report["runs_in"] / elapsed),
            "orjson_files_per_s_1_core": round(single),
            f"orjson_files_per_s_{cores}_cores": round(every),
            "ingest_share_of_orjson_all_cores": round(len(files) / elapsed / every, 3),
            "peak_rss_mb": round(max(peaks) / 2**20),
            "attempts_missing": report["attempts_missing"],
        }
        results.append(row)
        print(json.dumps(row))
    if len(results) > 1:
        first, last = results[0], results[-1]
        print(
            f"records x{last['records'] / first['records']:.1f} -> peak RSS "
            f"x{last['peak_rss_mb'] / first['peak_rss_mb']:.2f}"
        )
    (OUT / "v5_ingest_throughput.json").write_text(json.dumps(results, indent=2))


if __name__ == "__main__":
    main()
