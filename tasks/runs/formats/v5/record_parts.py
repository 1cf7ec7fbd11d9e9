"""v5's post-shard step: records carried from the shards to the chains, in bounded memory.

A chain's records can be read in different shards (shards are cut by file name and
size, and v5 files are recognised by content), so each shard writes its v5 records
to a parquet part, sorted by ``group_hash`` (one agent run). Chains are formed after
every shard is done: the parts are read one range of ``group_hash`` at a time, so the
records of an agent run are always read together and memory holds one range, not
the corpus. Row groups carry statistics on ``group_hash``, so a range reads only the
row groups that can hold it.
"""

from __future__ import annotations

import logging
import math
from collections.abc import Iterator, Sequence
from pathlib import Path

import polars as pl
import pyarrow.parquet as pq

from agir_retrain.tasks.records import Run
from agir_retrain.tasks.runs.formats.v5.chains import chain_runs
from agir_retrain.tasks.runs.formats.v5.counts import V5Counts
from agir_retrain.tasks.runs.formats.v5.schema import V5Record
from agir_retrain.tasks.tables import ParquetSink, from_frame

log = logging.getLogger(__name__)

# Record data (arrow, uncompressed) formed into chains at a time; decoded into Python objects
# it takes about 6x as much memory (measured: benchmarks/v5_ingest_throughput.py).
RANGE_BYTES = 16 << 20
_HASH_SPACE = 1 << 64


def write_part(records: Sequence[V5Record], path: Path) -> int:
    """Write a shard's v5 records to ``path``, sorted by agent run then file; return the count."""
    ordered = sorted(records, key=lambda r: (r.group_hash, r.source))
    with ParquetSink(path, V5Record) as sink:
        sink.extend(ordered)
    return len(ordered)


def part_rows(path: str | Path) -> int:
    """How many records a part holds (0 when it does not exist), from its footer."""
    return pq.ParquetFile(path).metadata.num_rows if Path(path).exists() else 0


def _ranges(parts: Sequence[str], range_bytes: int) -> int:
    """How many hash ranges keep each one's decoded records near ``range_bytes``."""
    size = 0
    for part in parts:
        metadata = pq.ParquetFile(part).metadata
        size += sum(metadata.row_group(i).total_byte_size for i in range(metadata.num_row_groups))
    return max(1, math.ceil(size / range_bytes))


def iter_chain_runs(
    parts: Sequence[str], counts: V5Counts, range_bytes: int = RANGE_BYTES
) -> Iterator[Run]:
    """Yield every chain of the records in ``parts``, in a stable order (agent run hash, run id).

    The order and the runs depend only on the records, not on how they were sharded.
    """
    parts = [str(p) for p in parts if part_rows(p)]
    if not parts:
        return
    ranges = _ranges(parts, range_bytes)
    log.info("forming v5 chains from %d parts in %d hash ranges", len(parts), ranges)
    for k in range(ranges):
        low = pl.lit(k * _HASH_SPACE // ranges, pl.UInt64)
        in_range = pl.col("group_hash") >= low
        if k + 1 < ranges:  # the last range runs to 2**64 - 1, which no literal above can name
            in_range &= pl.col("group_hash") < pl.lit((k + 1) * _HASH_SPACE // ranges, pl.UInt64)
        frame = (
            pl.scan_parquet(parts)
            .filter(in_range)
            .sort(["group_hash", "version", "agent_run_id", "source"])
            .collect()
        )
        group: list[V5Record] = []
        for record in from_frame(frame, V5Record):
            if group and _agent_run(group[0]) != _agent_run(record):
                yield from chain_runs(group, counts)
                group = []
            group.append(record)
        if group:
            yield from chain_runs(group, counts)
        del frame


def _agent_run(record: V5Record) -> tuple[int, str, str]:
    return record.group_hash, record.version, record.agent_run_id
