"""A/B the run-file reader against an older commit's, file by file, in one process.

    python benchmarks/reader_ab.py --files 300 --rounds 3            # against 4739249
    python benchmarks/reader_ab.py --commit <sha> --corpus bench-out/corpus-2000mb/runs

Old and new read each file in turn (alternating which goes first), so that load swings on
a shared machine hit both alike; prints MB/s of each and the new/old time ratio. The
older reader is taken with ``git show`` (the reader of 4739249 is one module).
"""

from __future__ import annotations

import argparse
import importlib.util
import subprocess
import sys
import tempfile
import time
from pathlib import Path

from agir_retrain.tasks.runs.reader import read_run_file

ROOT = Path(__file__).resolve().parent.parent


def old_reader(commit: str):
    """The ``read_run_file`` of an older commit, loaded from ``git show``."""
    source = subprocess.run(
        ["git", "show", f"{commit}:tasks/runs/reader.py"],
        cwd=ROOT, check=True, capture_output=True, text=True,
    ).stdout  # fmt: skip
    # A reason that later became a format of its own; the old reader only names it.
    source = source.replace("QuarantineReason.V5_ATTEMPT_FILE", "QuarantineReason.UNKNOWN_SCHEMA")
    path = Path(tempfile.mkdtemp()) / "old_reader.py"
    path.write_text(source)
    spec = importlib.util.spec_from_file_location("old_reader", path)
    module = importlib.util.module_from_spec(spec)
    sys.modules["old_reader"] = module
    spec.loader.exec_module(module)
    return module.read_run_file


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--commit", default="4739249")
    parser.add_argument("--corpus", default=str(ROOT / "bench-out" / "corpus-2000mb" / "runs"))
    parser.add_argument("--files", type=int, default=300)
    parser.add_argument("--rounds", type=int, default=3)
    args = parser.parse_args()
    old = old_reader(args.commit)
    files = sorted(Path(args.corpus).glob("*.json"))[: args.files]
    mb = sum(len(f.read_bytes()) for f in files) / 1e6 * args.rounds  # also warms the cache
    spent = {old: 0.0, read_run_file: 0.0}
    for i, file in enumerate(files * args.rounds):
        for reader in (old, read_run_file) if i % 2 else (read_run_file, old):
            start = time.perf_counter()
            reader(str(file))
            spent[reader] += time.perf_counter() - start
    print(
        f"{mb:.0f} MB each: old {mb / spent[old]:.0f} MB/s, new {mb / spent[read_run_file]:.0f}"
        f" MB/s, new/old time {spent[read_run_file] / spent[old]:.3f}"
    )


if __name__ == "__main__":
    main()
