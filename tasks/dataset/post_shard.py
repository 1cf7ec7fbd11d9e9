"""The dataset build's post-shard steps: runs formed from every shard's records, cached.

A format whose runs span files (v5's chains) has its runs formed once every shard is
built, from the parts the shards wrote (``runs.formats.base.PostShardStep``). The
outputs go in ``<work_dir>/<step name>/<key>/``, a folder laid out like a shard's,
whose key hashes the keys of the shards that hold the format's records: a rerun on
the same corpus reuses it, and any change to such a shard forms the runs again. It is
then garbled and assembled like any shard.
"""

from __future__ import annotations

import hashlib
import logging
from collections.abc import Sequence
from pathlib import Path

import polars as pl

from agir_retrain.tasks.dataset.build import ShardManifest
from agir_retrain.tasks.filenames import GARBLE_REQUESTS_FILE, REPORT_FILE
from agir_retrain.tasks.io import join
from agir_retrain.tasks.runs.formats.base import RunFormat
from agir_retrain.tasks.runs.ingest import ingest_post_shard, read_shard_report

log = logging.getLogger(__name__)


def build_post_shard(
    run_format: RunFormat, manifests: Sequence[ShardManifest], work_dir: str
) -> ShardManifest | None:
    """Form a format's runs from built shards into a shard-like folder; None if none hold any.

    Raises:
        ValueError: the format has no post-shard step.
    """
    step = run_format.post_shard
    if step is None:
        raise ValueError(f"run format {run_format.name!r} has no post-shard step")
    holding = [m for m in manifests if step.has_records(join(m.directory, step.part_file))]
    if not holding:
        return None
    digest = hashlib.sha256(f"{step.name} {step.version}\n".encode())
    for manifest in holding:
        digest.update(f"{manifest.key}\n".encode())
    key = digest.hexdigest()[:32]
    directory = join(work_dir, step.name, key)
    cached = Path(directory, REPORT_FILE).exists()
    if cached:
        report = read_shard_report(directory)
        log.info("%s %s: unchanged, reusing %s", run_format.name, step.name, directory)
    else:
        parts = [join(m.directory, step.part_file) for m in holding]
        report = ingest_post_shard(run_format, parts, directory, with_garble_requests=True)
    requests = pl.scan_parquet(join(directory, GARBLE_REQUESTS_FILE)).select(pl.len()).collect()
    return ShardManifest(
        index=max(m.index for m in manifests) + 1,
        key=key,
        directory=directory,
        cached=cached,
        files=0,  # the shards counted the files; this folder holds the runs they form
        size_bytes=0,
        runs=report.runs_in,
        garble_requests=requests.item(),
    )
