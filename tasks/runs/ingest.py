"""Ingest: read, score and pair a shard of run files; gather shard outputs into one dataset.

``ingest_shard`` is the unit of work the flows fan out (on Ray); ``ingest`` runs the
same units in a local process pool for the ``agir-retrain ingest`` command, and a
``DatasetWriter`` appends each finished shard to the outputs in shard order. A format
whose runs span files (``formats.base.PostShardStep``) gets its pending records written
beside each shard's outputs, and its runs formed after every shard
(``ingest_post_shard``), scored, paired and gathered like one more shard.
"""

from __future__ import annotations

import logging
import multiprocessing
import os
import shutil
import tempfile
import threading
from collections.abc import Callable, Iterator, Sequence
from concurrent.futures import Future, ProcessPoolExecutor
from contextlib import ExitStack, contextmanager
from pathlib import Path

import orjson

from agir_retrain.tasks.filenames import (
    GARBLE_REQUESTS_FILE,
    PAIRS_FILE,
    QUARANTINE_FILE,
    REPORT_FILE,
    RUNS_FILE,
    SCORED_FILE,
)
from agir_retrain.tasks.inputs import InputFile, expand_inputs, mark_duplicates
from agir_retrain.tasks.io import output_set, write_json_atomic
from agir_retrain.tasks.records import GarbleRequest, Quarantined, QuarantineReason, Run
from agir_retrain.tasks.runs.formats.base import RunFormat
from agir_retrain.tasks.runs.formats.registry import format_named, post_shard_formats
from agir_retrain.tasks.runs.gather import TABLE_FILES, DatasetWriter, read_shard_report
from agir_retrain.tasks.runs.pairing import garble_requests, pair_run
from agir_retrain.tasks.runs.reader import ReadLimits, RunFileResult, read_run_file
from agir_retrain.tasks.runs.report import Report
from agir_retrain.tasks.runs.scoring import score_run
from agir_retrain.tasks.runs.shards import Shard, plan_shards
from agir_retrain.tasks.tables import ParquetSink

# The output file names and the writer live in gather.py; named here too for callers.
__all__ = [
    "GARBLE_REQUESTS_FILE",
    "PAIRS_FILE",
    "QUARANTINE_FILE",
    "REPORT_FILE",
    "RUNS_FILE",
    "SCORED_FILE",
    "TABLE_FILES",
    "DatasetWriter",
    "ingest",
    "ingest_post_shard",
    "ingest_shard",
    "read_shard_report",
]

log = logging.getLogger(__name__)

# Flush row groups after this much input, so memory stays flat however big a shard is.
FLUSH_INPUT_BYTES = 32 << 20


def ingest_shard(
    files: Sequence[InputFile],
    directory: str,
    limits: ReadLimits,
    *,
    with_garble_requests: bool = False,
) -> Report:
    """Read, score and pair a shard's files into ``directory``; never fails on bad input.

    ``with_garble_requests`` also writes ``garble_requests.parquet`` (each pending
    pair with its rendered prompt) for the dataset flow's garbling; ``ingest`` alone
    does not need it, and it repeats each first-try run's prompt.
    The folder is written under a temporary name and renamed when complete, so a
    folder that exists holds a whole shard.
    """
    final = Path(directory)
    staging = final.with_name(f".{final.name}.{os.getpid()}.tmp")
    shutil.rmtree(staging, ignore_errors=True)
    staging.mkdir(parents=True)
    report = Report()
    sinks = _open_sinks(staging, with_garble_requests)
    pending_bytes = 0
    pending: dict[str, list[object]] = {}  # by format: records its post-shard step forms
    with open(staging / QUARANTINE_FILE, "wb") as quarantine:
        for file in files:
            result = _read_guarded(file, limits)
            report.add_file(result)
            if result.pending:
                pending.setdefault(result.file_format or "", []).extend(result.pending)
            for entry in result.quarantined:
                quarantine.write(orjson.dumps(entry, option=orjson.OPT_APPEND_NEWLINE))
            for run in result.runs:
                _emit_run(run, sinks, report, with_garble_requests)
            pending_bytes += result.size_bytes
            if pending_bytes >= FLUSH_INPUT_BYTES:
                for sink in sinks.values():
                    sink.flush()
                pending_bytes = 0
    # Runs spread over files, maybe over shards, are formed by `ingest_post_shard`. A shard
    # without a format's pending records writes no part (a missing part reads as empty).
    for name, records in pending.items():
        step = format_named(name).post_shard
        if step is None:
            raise ValueError(f"run format {name!r} left pending records but has no post_shard")
        step.write_part(records, staging / step.part_file)
    _finish_folder(sinks, report, staging, final)
    log.info(
        "shard %s: %d files, %d runs, %d quarantined %s",
        final.name,
        report.files_in,
        report.runs_in,
        sum(report.quarantine_reasons.values()),
        dict(report.quarantine_reasons) or "",
    )
    return report


def ingest_post_shard(
    run_format: RunFormat,
    parts: Sequence[str],
    directory: str,
    *,
    with_garble_requests: bool = False,
) -> Report:
    """Form a format's runs from every shard's part, then score and pair them like a shard.

    ``directory`` gets the files of a shard folder (no file is counted in its report:
    the shards counted them; its runs are the formed ones), so it is gathered like one.
    """
    step = run_format.post_shard
    if step is None:
        raise ValueError(f"run format {run_format.name!r} has no post-shard step")
    final = Path(directory)
    staging = final.with_name(f".{final.name}.{os.getpid()}.tmp")
    shutil.rmtree(staging, ignore_errors=True)
    staging.mkdir(parents=True)
    report = Report()
    sinks = _open_sinks(staging, with_garble_requests)
    (staging / QUARANTINE_FILE).write_bytes(b"")
    for run in step.form_runs(parts, report.format_counts.get(run_format.name)):
        report.runs_in += 1
        _emit_run(run, sinks, report, with_garble_requests)
    _finish_folder(sinks, report, staging, final)
    log.info(
        "%s %s: %d runs, by class %s",
        run_format.name,
        step.name,
        report.runs_in,
        {k: v for k, v in report.runs_by_class.items() if v},
    )
    return report


def _open_sinks(staging: Path, with_garble_requests: bool) -> dict[str, ParquetSink]:
    sinks = {name: ParquetSink(staging / name, kind) for name, kind in TABLE_FILES.items()}
    if with_garble_requests:
        sinks[GARBLE_REQUESTS_FILE] = ParquetSink(staging / GARBLE_REQUESTS_FILE, GarbleRequest)
    return sinks


def _emit_run(
    run: Run, sinks: dict[str, ParquetSink], report: Report, with_garble_requests: bool
) -> None:
    """Score and pair one run into the sinks, and count it."""
    scored = score_run(run)
    run_pairs = pair_run(run)
    sinks[RUNS_FILE].extend((run,))
    sinks[SCORED_FILE].extend(scored)
    sinks[PAIRS_FILE].extend(run_pairs.pairs)
    if with_garble_requests:
        pending = [(p.prompt_kind, p.chosen) for p in run_pairs.pairs if p.rejected is None]
        if pending:
            sinks[GARBLE_REQUESTS_FILE].extend(garble_requests(run, pending))
    report.add_run(run, len(scored), run_pairs)


def _finish_folder(
    sinks: dict[str, ParquetSink], report: Report, staging: Path, final: Path
) -> None:
    """Close the tables, write the report, and move the whole folder into place."""
    for sink in sinks.values():
        sink.close()
    report.check_balance()
    write_json_atomic(str(staging / REPORT_FILE), report.to_dict())
    shutil.rmtree(final, ignore_errors=True)
    os.replace(staging, final)


def _read_guarded(file: InputFile, limits: ReadLimits) -> RunFileResult:
    """Read one file; a bug in the reader quarantines that file instead of the batch."""
    if file.duplicate_of is not None:
        return _quarantined_input(
            file, QuarantineReason.DUPLICATE_FILE, f"byte-identical to {file.duplicate_of}"
        )
    try:
        return read_run_file(file.location, limits=limits)
    except Exception as error:  # one file must never stop the batch
        log.exception("unexpected error reading %s", file.location)
        return _quarantined_input(
            file, QuarantineReason.UNEXPECTED_ERROR, f"{type(error).__name__}: {error}"
        )


def _quarantined_input(file: InputFile, reason: QuarantineReason, detail: str) -> RunFileResult:
    entry = Quarantined(source=file.location, run_id=None, reason=reason, detail=detail)
    return RunFileResult(
        source=file.location,
        size_bytes=file.size_bytes,
        quarantined=(entry,),
        file_quarantined=True,
    )


@contextmanager
def _worker_pool(workers: int) -> Iterator[ProcessPoolExecutor]:
    """A process pool whose workers are up before the caller starts any thread.

    Forking is cheap (workers inherit the imports) but unsafe once other threads
    exist (one may hold a lock the child then waits on forever), so fork is used
    only while this process is single-threaded, and spawn otherwise.
    """
    method = "fork" if threading.active_count() == 1 and os.name == "posix" else "spawn"
    pool = ProcessPoolExecutor(workers, mp_context=multiprocessing.get_context(method))
    try:
        pool.submit(int).result()  # start every worker now, before callers start threads
        yield pool
    finally:
        pool.shutdown(cancel_futures=True)


def ingest(
    locations: list[str],
    out: str,
    *,
    limits: ReadLimits,
    shard_bytes: int,
    workers: int,
    on_plan: Callable[[list[Shard]], None] | None = None,
    on_shard_done: Callable[[Shard], None] | None = None,
) -> Report:
    """Read, score and pair run files into ``out`` with a local process pool.

    Writes ``runs.parquet``, ``scored.parquet``, ``pairs.parquet``,
    ``quarantine.jsonl`` and ``report.json``, as one set (``io.output_set``); runs formed
    post-shard (v5 chains) come after every shard's, format by format. A file
    byte-identical to an earlier one (by sorted path) is quarantined as
    ``duplicate_file``. ``on_plan`` is called once the shards are known and the workers
    are up; ``on_shard_done`` as each shard is gathered.

    Raises:
        DuplicateRunIdError: two runs share an id (see ``gather.DatasetWriter``).
    """
    files = mark_duplicates(expand_inputs(locations))
    shards = plan_shards(files, shard_bytes)
    log.info(
        "%d files (%d bytes) in %d shards",
        len(files),
        sum(f.size_bytes for f in files),
        len(shards),
    )
    # Every temporary folder is removed on the way out, on error or interruption too (the
    # CLI turns SIGTERM into SystemExit so that this unwinding runs).
    with ExitStack() as stack:
        scratch = stack.enter_context(tempfile.TemporaryDirectory(prefix="agir-ingest-"))
        staged = stack.enter_context(output_set(out))
        pool = (
            stack.enter_context(_worker_pool(workers)) if workers > 1 and len(shards) > 1 else None
        )
        if on_plan:
            on_plan(shards)
        directories = [os.path.join(scratch, f"shard-{s.index:05d}") for s in shards]
        writer = DatasetWriter(staged)
        try:
            if pool is None:
                for shard, directory in zip(shards, directories, strict=True):
                    ingest_shard(shard.files, directory, limits)
                    _gathered(writer, shard, directory, on_shard_done)
            else:
                futures: list[Future[Report]] = [
                    pool.submit(ingest_shard, shard.files, directory, limits)
                    for shard, directory in zip(shards, directories, strict=True)
                ]
                for shard, directory, future in zip(shards, directories, futures, strict=True):
                    future.result()  # in shard order: the dataset's row order never varies
                    _gathered(writer, shard, directory, on_shard_done)
            # Runs formed post-shard last: their records may come from any shard. A format with
            # no part is skipped (v5's first arrow table alone costs ~0.8 s: pyarrow imports
            # pandas).
            for run_format in post_shard_formats():
                step = run_format.post_shard
                parts = [os.path.join(d, step.part_file) for d in directories]
                if any(os.path.exists(part) for part in parts):
                    formed = os.path.join(scratch, f"{run_format.name}-{step.name}")
                    ingest_post_shard(run_format, parts, formed)
                    writer.add(formed)
        except BaseException:
            writer.abort()
            raise
        return writer.close()


def _gathered(
    writer: DatasetWriter,
    shard: Shard,
    directory: str,
    on_shard_done: Callable[[Shard], None] | None,
) -> None:
    writer.add(directory)
    keep = {f.post_shard.part_file for f in post_shard_formats()}  # for `ingest_post_shard`
    for path in Path(directory).iterdir():
        if path.name not in keep:
            path.unlink()
    if on_shard_done:
        on_shard_done(shard)
