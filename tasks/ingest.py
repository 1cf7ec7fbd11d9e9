"""Ingest: read, score and pair a shard of run files; merge shard outputs into one dataset.

``ingest_shard`` is the unit of work the flows fan out (on Ray); ``ingest`` runs the
same units in a local process pool for the ``agir-retrain ingest`` command.
"""

from __future__ import annotations

import logging
import multiprocessing
import os
import shutil
import tempfile
from collections.abc import Callable, Sequence
from concurrent.futures import ProcessPoolExecutor, as_completed
from dataclasses import dataclass
from pathlib import Path

import orjson

from tasks.io import InputFile, atomic_output, expand_inputs, write_json_atomic
from tasks.pairing import pair_run
from tasks.parquet_concat import concat_parquet
from tasks.records import Pair, Quarantined, QuarantineReason, Run, ScoredRecord
from tasks.report import Report
from tasks.runs import ReadLimits, RunFileResult, read_run_file
from tasks.scoring import score_run
from tasks.shards import Shard, plan_shards
from tasks.tables import ParquetSink

log = logging.getLogger(__name__)

RUNS_FILE = "runs.parquet"
SCORED_FILE = "scored.parquet"
PAIRS_FILE = "pairs.parquet"
QUARANTINE_FILE = "quarantine.jsonl"
REPORT_FILE = "report.json"
TABLE_FILES = {RUNS_FILE: Run, SCORED_FILE: ScoredRecord, PAIRS_FILE: Pair}

# Flush row groups after this much input, so memory stays flat however big a shard is.
FLUSH_INPUT_BYTES = 32 << 20


@dataclass(frozen=True, slots=True, kw_only=True)
class ShardOutput:
    """Where a shard's outputs are, and its report."""

    shard_index: int
    directory: str
    report: Report


def ingest_shard(files: Sequence[InputFile], directory: str, limits: ReadLimits) -> ShardOutput:
    """Read, score and pair a shard's files into ``directory``; never fails on bad input.

    The folder is written under a temporary name and renamed when complete, so a
    folder that exists holds a whole shard.
    """
    final = Path(directory)
    staging = final.with_name(f".{final.name}.{os.getpid()}.tmp")
    shutil.rmtree(staging, ignore_errors=True)
    staging.mkdir(parents=True)
    report = Report()
    sinks = {name: ParquetSink(staging / name, kind) for name, kind in TABLE_FILES.items()}
    pending_bytes = 0
    with open(staging / QUARANTINE_FILE, "wb") as quarantine:
        for file in files:
            result = _read_guarded(file, limits)
            report.add_file(result)
            for entry in result.quarantined:
                quarantine.write(orjson.dumps(entry, option=orjson.OPT_APPEND_NEWLINE))
            for run in result.runs:
                scored = score_run(run)
                run_pairs = pair_run(run)
                sinks[RUNS_FILE].extend((run,))
                sinks[SCORED_FILE].extend(scored)
                sinks[PAIRS_FILE].extend(run_pairs.pairs)
                report.add_run(run, len(scored), run_pairs)
            pending_bytes += result.size_bytes
            if pending_bytes >= FLUSH_INPUT_BYTES:
                for sink in sinks.values():
                    sink.flush()
                pending_bytes = 0
    for sink in sinks.values():
        sink.close()
    report.check_balance()
    write_json_atomic(str(staging / REPORT_FILE), report.to_dict())
    shutil.rmtree(final, ignore_errors=True)
    os.replace(staging, final)
    return ShardOutput(shard_index=-1, directory=str(final), report=report)


def _read_guarded(file: InputFile, limits: ReadLimits) -> RunFileResult:
    """Read one file; a bug in the reader quarantines that file instead of the batch."""
    try:
        return read_run_file(file.location, limits=limits)
    except Exception as error:
        log.exception("unexpected error reading %s", file.location)
        entry = Quarantined(
            source=file.location,
            run_id=None,
            reason=QuarantineReason.UNEXPECTED_ERROR,
            detail=f"{type(error).__name__}: {error}",
        )
        return RunFileResult(
            source=file.location,
            size_bytes=file.size_bytes,
            quarantined=(entry,),
            file_quarantined=True,
        )


def read_shard_report(directory: str) -> Report:
    """Load the report a finished shard folder holds."""
    return Report.from_dict(orjson.loads(Path(directory, REPORT_FILE).read_bytes()))


def merge_shards(directories: Sequence[str], out: str) -> Report:
    """Concatenate shard outputs, in the order given, into the dataset files under ``out``.

    Parquet parts are joined without decoding (``concat_parquet``); the report is
    the sum of the shards'.
    """
    report = Report()
    for directory in directories:
        report.merge(read_shard_report(directory))
    report.check_balance()
    for name in TABLE_FILES:
        with atomic_output(_join(out, name)) as staged:
            concat_parquet([Path(directory, name) for directory in directories], staged)
    with atomic_output(_join(out, QUARANTINE_FILE)) as staged, open(staged, "wb") as merged:
        for directory in directories:
            with open(Path(directory, QUARANTINE_FILE), "rb") as part:
                shutil.copyfileobj(part, merged)
    write_json_atomic(_join(out, REPORT_FILE), report.to_dict())
    return report


def _join(out: str, name: str) -> str:
    return out.rstrip("/") + "/" + name


def ingest(
    locations: list[str],
    out: str,
    *,
    limits: ReadLimits,
    shard_bytes: int,
    workers: int,
    on_shard_done: Callable[[Shard], None] | None = None,
    on_plan: Callable[[list[Shard]], None] | None = None,
) -> Report:
    """Read, score and pair run files into ``out`` with a local process pool.

    Writes ``runs.parquet``, ``scored.parquet``, ``pairs.parquet``,
    ``quarantine.jsonl`` and ``report.json``.
    """
    files = expand_inputs(locations)
    shards = plan_shards(files, shard_bytes)
    log.info(
        "%d files (%d bytes) in %d shards",
        len(files),
        sum(f.size_bytes for f in files),
        len(shards),
    )
    if on_plan:
        on_plan(shards)
    with tempfile.TemporaryDirectory(prefix="agir-ingest-") as scratch:
        directories = [os.path.join(scratch, f"shard-{s.index:05d}") for s in shards]
        if workers <= 1 or len(shards) <= 1:
            for shard, directory in zip(shards, directories, strict=True):
                ingest_shard(shard.files, directory, limits)
                if on_shard_done:
                    on_shard_done(shard)
        else:
            # spawn, not fork: polars' thread pool does not survive a fork.
            context = multiprocessing.get_context("spawn")
            with ProcessPoolExecutor(max_workers=workers, mp_context=context) as pool:
                futures = {
                    pool.submit(ingest_shard, shard.files, directory, limits): shard
                    for shard, directory in zip(shards, directories, strict=True)
                }
                for future in as_completed(futures):
                    future.result()
                    if on_shard_done:
                        on_shard_done(futures[future])
        return merge_shards(directories, out)
