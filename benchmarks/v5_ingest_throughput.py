"""Benchmark `agir-retrain ingest` on v5 corpora (one small file per record) against orjson.

    python benchmarks/v5_ingest_throughput.py                      # 25,000 and 100,000 records
    python benchmarks/v5_ingest_throughput.py --records 100000 --repeats 1

For each corpus size it reports, side by side:
- the whole `agir-retrain ingest` command (a subprocess, start-up included): files/s,
  records/s, runs (chains)/s, and peak RSS summed over its process tree, sampled every 50 ms;
- the ceiling: plain `orjson.loads` over the same files (read + parse), on one core and on
  every core, in the same run.
CPU seconds (the ingest process tree's, and the orjson pass's) are given beside the wall
times: on a shared machine they do not move with the load. Two sizes show how memory
grows with the corpus: forming chains holds one range of
agent runs at a time (`chain_parts.RANGE_BYTES`), not the corpus.
Results go to stdout and to bench-out/v5_ingest_throughput.json.
"""

from __future__ import annotations

import argparse
import json
import os
import resource
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


def _children_cpu_s() -> float:
    usage = resource.getrusage(resource.RUSAGE_CHILDREN)
    return usage.ru_utime + usage.ru_stime


def run_ingest(folder: Path, out: Path) -> tuple[float, int, float]:
    """Run the ingest command; return its wall time, the peak RSS of its process tree, and
    the CPU seconds of the whole tree (workers included: each waits for its children)."""
    out.mkdir(parents=True, exist_ok=True)
    return _measured([*CLI, "ingest", str(folder / "runs"), "--out", str(out)])


_PARTS = """
import sys
from pathlib import Path
from agir_retrain.tasks.runs.formats.v5.record_parts import write_part
from agir_retrain.tasks.runs.reader import read_run_file
files, out = sorted(Path(sys.argv[1]).iterdir()), Path(sys.argv[2])
out.mkdir(parents=True, exist_ok=True)
step = len(files) // 8 + 1  # eight parts, as eight shards would write
for k in range(8):
    chunk = files[k * step : (k + 1) * step]
    write_part([r for f in chunk for r in read_run_file(str(f)).pending], out / f"{k}.parquet")
"""
_CHAINS = """
import sys
from pathlib import Path
from agir_retrain.tasks.runs.formats.v5.format import ChainStep, V5Format
from agir_retrain.tasks.runs.ingest import ingest_post_shard
parts = sorted(str(p) for p in Path(sys.argv[1]).glob("*.parquet"))
v5 = V5Format()
v5.post_shard = ChainStep(range_bytes=int(sys.argv[3]))
ingest_post_shard(v5, parts, sys.argv[2])
"""


def chain_step(folder: Path, range_bytes: int) -> tuple[float, int, float]:
    """Form the chains alone from eight record parts; wall time, peak RSS, CPU seconds."""
    parts = OUT / f"{folder.name}-parts"
    if not parts.exists():
        subprocess.run([sys.executable, "-c", _PARTS, str(folder / "runs"), str(parts)], check=True)
    out = OUT / f"{folder.name}-chains-{range_bytes}"
    return _measured([sys.executable, "-c", _CHAINS, str(parts), str(out), str(range_bytes)])


def _measured(command: list[str]) -> tuple[float, int, float]:
    cpu = _children_cpu_s()
    start = time.perf_counter()
    process = psutil.Popen(command, cwd=ROOT, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
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
        raise SystemExit(f"{command[:4]} failed with exit status {process.returncode}")
    return elapsed, peak, _children_cpu_s() - cpu


def _parse_many(paths: list[Path]) -> int:
    for path in paths:
        try:
            orjson.loads(path.read_bytes())
        except orjson.JSONDecodeError:  # the corpus's malformed files: parsing them is the work
            pass
    return len(paths)


def orjson_ceiling(files: list[Path], workers: int) -> tuple[float, float]:
    """Files/s at which plain read + orjson.loads gets through the corpus (page cache warm),
    and the CPU seconds it took (load-independent, unlike the wall time on a shared box)."""
    start, cpu = time.perf_counter(), time.process_time() + _children_cpu_s()
    if workers == 1:
        _parse_many(files)
    else:
        chunks = [files[i : i + 512] for i in range(0, len(files), 512)]
        with ProcessPoolExecutor(workers) as pool:
            sum(pool.map(_parse_many, chunks))
    used = time.process_time() + _children_cpu_s() - cpu
    return len(files) / (time.perf_counter() - start), used


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--records", default="25000,100000", help="corpus sizes, comma-separated")
    parser.add_argument("--repeats", type=int, default=1, help="ingest runs per size (median)")
    parser.add_argument(
        "--chain-step-only", action="store_true", help="measure only the chain step (memory)"
    )
    args = parser.parse_args()
    cores = os.cpu_count() or 1
    results = []
    for size in (int(s) for s in args.records.split(",")):
        if args.chain_step_only:
            break
        folder = corpus(size)
        files = sorted((folder / "runs").glob("*.json"))
        _parse_many(files)  # warm the page cache for every measurement alike
        single, single_cpu = orjson_ceiling(files, 1)
        every, _ = orjson_ceiling(files, cores)
        timings, peaks, cpus = [], [], []
        for repeat in range(args.repeats):
            elapsed, peak, cpu = run_ingest(folder, OUT / f"v5-out-{size}-{repeat}")
            timings.append(elapsed)
            peaks.append(peak)
            cpus.append(cpu)
        elapsed, cpu = statistics.median(timings), statistics.median(cpus)
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
            "ingest_cpu_s": round(cpu, 1),
            "ingest_cpu_ms_per_file": round(1000 * cpu / len(files), 3),
            "orjson_cpu_ms_per_file": round(1000 * single_cpu / len(files), 3),
            "ingest_cpu_vs_orjson_cpu": round(cpu / single_cpu, 1),
            "load_average_1m": round(os.getloadavg()[0], 1),
            "peak_rss_mb": round(max(peaks) / 2**20),
            "attempts_missing": report["attempts_missing"],
        }
        results.append(row)
        print(json.dumps(row))
    # The chain step alone on the largest corpus: ranges of 16 MiB (the default) and 4 MiB
    # against one range holding every record, which is what grouping without ranges holds.
    folder = corpus(max(int(s) for s in args.records.split(",")))
    steps = ((16 << 20, "16MiB_ranges"), (4 << 20, "4MiB_ranges"), (1 << 40, "one_range"))
    for range_bytes, label in steps:
        elapsed, peak, cpu = chain_step(folder, range_bytes)
        row = {"chain_step": label, "s": round(elapsed, 1), "cpu_s": round(cpu, 1),
               "peak_rss_mb": round(peak / 2**20)}  # fmt: skip
        results.append(row)
        print(json.dumps(row))
    sizes = [r for r in results if "records" in r]
    if len(sizes) > 1:
        first, last = sizes[0], sizes[-1]
        print(
            f"records x{last['records'] / first['records']:.1f} -> peak RSS "
            f"x{last['peak_rss_mb'] / first['peak_rss_mb']:.2f}"
        )
    name = "v5_chain_step.json" if args.chain_step_only else "v5_ingest_throughput.json"
    (OUT / name).write_text(json.dumps(results, indent=2))


if __name__ == "__main__":
    main()
