"""Building a dataset from shards: content-addressed shard outputs, cached garbles, assembly.

Each shard's outputs live in ``<work_dir>/shards/<key>/``, where the key hashes the
shard's files (content for local files, the store's ETag for object storage), the
read settings and ``STAGE_VERSION``. A folder that exists is complete (it is renamed
into place last), so a rerun reuses it and a grown corpus recomputes only the shards
its new files fall in. Garbled texts are cached beside each shard, keyed by the base
model and the sampling settings.
"""

from __future__ import annotations

import hashlib
import json
import logging
import os
from collections.abc import Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path

import polars as pl

from agir_retrain.tasks.dataset.export import ExportReport, export_dataset
from agir_retrain.tasks.filenames import (
    GARBLE_REQUESTS_FILE,
    PAIRS_FILE,
    REPORT_FILE,
    RUNS_FILE,
    SCORED_FILE,
)
from agir_retrain.tasks.inputs import InputFile, expand_inputs, mark_duplicates
from agir_retrain.tasks.io import atomic_output, join, output_set, sha256_file
from agir_retrain.tasks.records import (
    GARBLE_RESULT_SCHEMA,
    GarbleMethod,
    GarbleRequest,
    GarbleResult,
    Pair,
)
from agir_retrain.tasks.runs.fields import ReadLimits
from agir_retrain.tasks.runs.ingest import DatasetWriter, ingest_shard, read_shard_report
from agir_retrain.tasks.runs.report import Report
from agir_retrain.tasks.runs.shards import Shard, plan_shards
from agir_retrain.tasks.settings.models import ExportSettings, GarbleSettings, ReadSettings
from agir_retrain.tasks.tables import ParquetSink, from_frame, read_table

log = logging.getLogger(__name__)

STAGE_VERSION = "3"  # bump when a shard's outputs change for the same inputs
GARBLE_VERSION = "2"  # bump when garbling changes what it samples (2: float32 inverse CDF)
_BIG_FILE = 16 << 20


@dataclass(frozen=True, slots=True, kw_only=True)
class PlannedShard:
    """A shard, the content key of its inputs, and the folder its outputs live in."""

    shard: Shard
    key: str
    directory: str


@dataclass(frozen=True, slots=True, kw_only=True)
class ShardManifest:
    """What a built shard holds (small: tasks return this, not data)."""

    index: int
    key: str
    directory: str
    cached: bool
    files: int
    size_bytes: int
    runs: int
    garble_requests: int


@dataclass(frozen=True, slots=True, kw_only=True)
class GarbleStats:
    """How the rejected sides of first-try pairs were made, and the key they are cached under."""

    key: str
    requests: int
    cached: int
    model: int
    fallback: int
    redraws: int
    new_tokens: int


def _fingerprint(file: InputFile) -> str:
    if file.fingerprint:
        return file.fingerprint
    return sha256_file(file.location)


def plan_dataset(
    inputs: Sequence[str], work_dir: str, shard_bytes: int, read: ReadSettings
) -> list[PlannedShard]:
    """Expand the inputs, cut them into shards and give each its content key."""
    files = expand_inputs(list(inputs))
    with ThreadPoolExecutor(max_workers=min(8, (os.cpu_count() or 1) * 2)) as pool:
        fingerprints = dict(
            zip((f.location for f in files), pool.map(_fingerprint, files), strict=True)
        )
    # Byte-identical files: the first by sorted path is read, the others quarantined.
    files = mark_duplicates(files, lambda f: fingerprints[f.location])
    settings = read.model_dump_json()
    planned = []
    for shard in plan_shards(files, shard_bytes):
        digest = hashlib.sha256(f"{STAGE_VERSION}\n{settings}\n".encode())
        for file in shard.files:
            fingerprint, duplicate_of = fingerprints[file.location], file.duplicate_of or ""
            digest.update(f"{file.location}\x1f{fingerprint}\x1f{duplicate_of}\n".encode())
        key = digest.hexdigest()[:32]
        planned.append(PlannedShard(shard=shard, key=key, directory=join(work_dir, "shards", key)))
    return planned


def build_shard(planned: PlannedShard, read: ReadSettings) -> ShardManifest:
    """Read, score and pair one shard, unless its content-addressed folder already exists."""
    cached = Path(planned.directory, REPORT_FILE).exists()
    if cached:
        report = read_shard_report(planned.directory)
        log.info("shard %d: unchanged, reusing %s", planned.shard.index, planned.directory)
    else:
        report = ingest_shard(
            planned.shard.files,
            planned.directory,
            ReadLimits.from_settings(read),
            with_garble_requests=True,
        )
    requests = (
        pl.scan_parquet(join(planned.directory, GARBLE_REQUESTS_FILE))
        .select(pl.len())
        .collect()
        .item()
    )
    return ShardManifest(
        index=planned.shard.index,
        key=planned.key,
        directory=planned.directory,
        cached=cached,
        files=len(planned.shard.files),
        size_bytes=planned.shard.size_bytes,
        runs=report.runs_in,
        garble_requests=requests,
    )


def model_identity(model: str) -> str:
    """A stable id for a base model: a hub id as named, a local folder by its files.

    Small files are hashed by content; weight files over 16 MB by name, size and
    modification time, which change whenever the weights are rewritten.
    """
    folder = Path(model)
    if not folder.is_dir():
        return model
    digest = hashlib.sha256()
    for path in sorted(p for p in folder.rglob("*") if p.is_file()):
        stat = path.stat()
        digest.update(str(path.relative_to(folder)).encode())
        if stat.st_size > _BIG_FILE:
            digest.update(f"{stat.st_size}:{stat.st_mtime_ns}".encode())
        else:
            digest.update(path.read_bytes())
    return digest.hexdigest()


def garble_key(model: str, settings: GarbleSettings) -> str:
    """The cache key of garbled texts: base model, sampling settings and ``GARBLE_VERSION``."""
    payload = json.dumps(
        {"version": GARBLE_VERSION, "model": model_identity(model), **settings.sampling_key()},
        sort_keys=True,
    )
    return hashlib.sha256(payload.encode()).hexdigest()[:32]


def _garbled_path(directory: str, key: str) -> str:
    return join(directory, "garbled", f"{key}.parquet")


def pending_garble_requests(
    manifests: Sequence[ShardManifest], key: str
) -> tuple[list[GarbleRequest], dict[str, str]]:
    """Requests of shards with no garbled texts cached for ``key``, and each one's shard folder."""
    requests: list[GarbleRequest] = []
    owner: dict[str, str] = {}
    for manifest in manifests:
        if not manifest.garble_requests or Path(_garbled_path(manifest.directory, key)).exists():
            continue
        frame = read_table(join(manifest.directory, GARBLE_REQUESTS_FILE), GarbleRequest)
        for request in from_frame(frame, GarbleRequest):
            requests.append(request)
            owner[request.request_id] = manifest.directory
    return requests, owner


def save_garbled(results: Sequence[GarbleResult], owner: dict[str, str], key: str) -> None:
    """Cache results beside the shard each request came from."""
    by_shard: dict[str, list[GarbleResult]] = {}
    for result in results:
        by_shard.setdefault(owner[f"{result.run_id}/{result.prompt_kind.value}"], []).append(result)
    for directory, rows in by_shard.items():
        with (
            atomic_output(_garbled_path(directory, key)) as staged,
            ParquetSink(staged, GarbleResult) as sink,
        ):
            sink.extend(rows)


def _garbled(manifests: Sequence[ShardManifest], key: str) -> pl.DataFrame:
    paths = [
        _garbled_path(m.directory, key)
        for m in manifests
        if m.garble_requests and Path(_garbled_path(m.directory, key)).exists()
    ]
    if not paths:
        return pl.DataFrame(schema=GARBLE_RESULT_SCHEMA)
    return pl.concat([read_table(p, GarbleResult) for p in paths])


def garble_stats(manifests: Sequence[ShardManifest], key: str, fresh: int) -> GarbleStats:
    """Count how the rejected sides were made, across every shard's cached results."""
    garbled = _garbled(manifests, key)
    method = garbled.get_column("garble_method").cast(pl.String)
    model_rows = garbled.filter(method == GarbleMethod.MODEL.value)
    return GarbleStats(
        key=key,
        requests=sum(m.garble_requests for m in manifests),
        cached=garbled.height - fresh,
        model=model_rows.height,
        fallback=int((method == GarbleMethod.FALLBACK.value).sum()),
        redraws=int((garbled.get_column("draws") - 1).sum() or 0),
        new_tokens=int(garbled.get_column("new_tokens").sum() or 0),
    )


def assemble_dataset(
    manifests: Sequence[ShardManifest],
    out: str,
    work_dir: str,
    key: str,
    export: ExportSettings,
) -> tuple[Report, ExportReport]:
    """Gather shards into ``out`` (pairs with their garbled sides) and export DPO/KTO files.

    Everything is written to a folder beside ``out`` and swapped in as one set
    (``io.output_set``; for a URL, uploaded file by file, the report last). ``work_dir``
    is not written to.

    Raises:
        DuplicateRunIdError: two runs share an id.
    """
    directories = [m.directory for m in manifests]
    with output_set(out) as local:
        writer = DatasetWriter(local, tables=(RUNS_FILE, SCORED_FILE))
        try:
            for directory in directories:
                writer.add(directory)
        except BaseException:
            writer.abort()
            raise
        report = writer.close()
        garbled = _garbled(manifests, key).select(
            "run_id", "prompt_kind", "rejected", "garble_method"
        )
        pairs = pl.concat([read_table(join(d, PAIRS_FILE), Pair) for d in directories])
        filled = (
            pairs.join(
                garbled,
                on=["run_id", "prompt_kind"],
                how="left",
                suffix="_garbled",
                maintain_order="left",
            )
            .with_columns(
                pl.coalesce("rejected", "rejected_garbled").alias("rejected"),
                pl.when(pl.col("rejected_garbled").is_not_null())
                .then(pl.col("garble_method_garbled"))
                .otherwise(pl.col("garble_method"))
                .alias("garble_method"),
            )
            .select(pairs.columns)
        )
        with ParquetSink(Path(local, PAIRS_FILE), Pair) as sink:
            sink.extend(from_frame(filled, Pair))
        export_report = export_dataset(local, local, export)
    return report, export_report
