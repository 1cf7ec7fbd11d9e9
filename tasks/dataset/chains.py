"""The dataset build's v5 step: chains formed from every shard's records, content-addressed.

A v5 chain's records can fall in any shard, so chains are formed once every shard is
built, from the record parts the shards wrote (``runs.chain_parts``). The outputs go in
``<work_dir>/chains/<key>/``, a folder laid out like a shard's, whose key hashes the
keys of the shards that hold v5 records: a rerun on the same corpus reuses it, and any
change to a shard holding v5 records forms the chains again. It is then garbled and
assembled like any shard.
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
from agir_retrain.tasks.runs.chain_parts import V5_RECORDS_FILE, part_rows
from agir_retrain.tasks.runs.ingest import ingest_chains, read_shard_report

log = logging.getLogger(__name__)

CHAINS_VERSION = "1"  # bump when forming chains changes its outputs for the same records


def build_chains(manifests: Sequence[ShardManifest], work_dir: str) -> ShardManifest | None:
    """Form the v5 chains of built shards into a shard-like folder; None when no shard has v5."""
    holding = [m for m in manifests if part_rows(join(m.directory, V5_RECORDS_FILE))]
    if not holding:
        return None
    digest = hashlib.sha256(f"chains {CHAINS_VERSION}\n".encode())
    for manifest in holding:
        digest.update(f"{manifest.key}\n".encode())
    key = digest.hexdigest()[:32]
    directory = join(work_dir, "chains", key)
    cached = Path(directory, REPORT_FILE).exists()
    if cached:
        report = read_shard_report(directory)
        log.info("v5 chains: unchanged, reusing %s", directory)
    else:
        parts = [join(m.directory, V5_RECORDS_FILE) for m in holding]
        report = ingest_chains(parts, directory, with_garble_requests=True)
    requests = pl.scan_parquet(join(directory, GARBLE_REQUESTS_FILE)).select(pl.len()).collect()
    return ShardManifest(
        index=max(m.index for m in manifests) + 1,
        key=key,
        directory=directory,
        cached=cached,
        files=0,  # the shards counted the files; this folder holds their chains
        size_bytes=0,
        runs=report.runs_in,
        garble_requests=requests.item(),
    )
