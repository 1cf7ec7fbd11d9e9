"""Gather finished shard folders, in order, into one dataset folder, and the files it holds.

A run id must name one run: ``DatasetWriter`` fails, naming both sources, if two
runs of the shards it gathers share one (``run_ids.make_run_id`` makes that a bug or
a corrupt input, never a name clash).
"""

from __future__ import annotations

import shutil
from collections.abc import Sequence
from contextlib import ExitStack
from pathlib import Path

import orjson
import pyarrow.parquet as pq

from agir_retrain.tasks.errors import AgirError
from agir_retrain.tasks.filenames import (
    PAIRS_FILE,
    QUARANTINE_FILE,
    REPORT_FILE,
    RUNS_FILE,
    SCORED_FILE,
)
from agir_retrain.tasks.io import atomic_output, join, write_json_atomic
from agir_retrain.tasks.parquet_concat import ParquetConcatenator
from agir_retrain.tasks.records import Pair, Run, ScoredRecord
from agir_retrain.tasks.runs.report import Report

TABLE_FILES = {RUNS_FILE: Run, SCORED_FILE: ScoredRecord, PAIRS_FILE: Pair}


class DuplicateRunIdError(AgirError):
    """Two runs share an id: pairs, prompts, splits and garbles would be mixed up."""


def read_shard_report(directory: str) -> Report:
    """Load the report a finished shard folder holds."""
    return Report.from_dict(orjson.loads(Path(directory, REPORT_FILE).read_bytes()))


class DatasetWriter:
    """Gather shard folders, in order, into the dataset files under ``out``.

    Parquet parts are joined without decoding (``ParquetConcatenator``), quarantine
    lines are copied, and the report is the sum of the shards'. Nothing appears under
    ``out`` until ``close``, and then each file appears whole; callers that need the
    files to appear as one set write ``out`` inside ``io.output_set``.

    Raises:
        DuplicateRunIdError: from ``add``, when a run id was already gathered.
    """

    def __init__(self, out: str, tables: Sequence[str] = tuple(TABLE_FILES)) -> None:
        self.out = out
        self.report = Report()
        self._sources: dict[str, str] = {}  # run id -> the file it came from
        self._stack = ExitStack()
        self._tables = {
            name: ParquetConcatenator(self._stack.enter_context(atomic_output(join(out, name))))
            for name in tables
        }
        staged = self._stack.enter_context(atomic_output(join(out, QUARANTINE_FILE)))
        self._quarantine = self._stack.enter_context(open(staged, "wb"))

    def add(self, directory: str) -> None:
        """Append one finished shard folder."""
        self._check_run_ids(Path(directory, RUNS_FILE))
        self.report.merge(read_shard_report(directory))
        for name, concatenator in self._tables.items():
            concatenator.append(Path(directory, name))
        with open(Path(directory, QUARANTINE_FILE), "rb") as part:
            shutil.copyfileobj(part, self._quarantine)

    def _check_run_ids(self, runs: Path) -> None:
        # Two small columns of a file just written (in the page cache): milliseconds a shard.
        columns = pq.ParquetFile(runs).read(["run_id", "source"], use_threads=False).to_pydict()
        for run_id, source in zip(columns["run_id"], columns["source"], strict=True):
            earlier = self._sources.get(run_id)
            if earlier is not None:
                raise DuplicateRunIdError(
                    f"two runs share the id {run_id!r}: one from {earlier}, one from {source}; "
                    "each run id must name one run (see docs/run-format.md, 'Run ids')"
                )
            self._sources[run_id] = source

    def close(self) -> Report:
        """Finish every file and write ``report.json``; return the report."""
        self.report.check_balance()
        for concatenator in self._tables.values():
            concatenator.close()
        self._quarantine.close()
        self._stack.close()  # atomic_output swaps each finished file in
        write_json_atomic(join(self.out, REPORT_FILE), self.report.to_dict())
        return self.report

    def abort(self) -> None:
        """Discard everything written so far."""
        for concatenator in self._tables.values():
            concatenator.abort()
        self._stack.__exit__(RuntimeError, RuntimeError("aborted"), None)
