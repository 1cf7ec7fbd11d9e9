"""The v5 format: one attempt record per file; a run is a chain of records, formed post-shard.

Everything v5 lives in this package: ``schema.py`` (the record kept), ``record_reader.py``
(detection and validation of one record), ``chains.py`` (chains and their classes),
``record_parts.py`` (records carried from the shards to the chain step), ``counts.py``
(its report entries). See ``docs/run-format.md`` ("v5 records").
"""

from __future__ import annotations

from collections.abc import Iterator, Sequence
from pathlib import Path
from typing import Any

from agir_retrain.tasks.records import Run
from agir_retrain.tasks.runs.fields import ReadLimits, RunFileResult
from agir_retrain.tasks.runs.formats.base import RunFormat
from agir_retrain.tasks.runs.formats.v5.counts import V5Counts
from agir_retrain.tasks.runs.formats.v5.record_reader import looks_like_v5, read_v5_record
from agir_retrain.tasks.runs.formats.v5.schema import FORMAT_NAME, PART_FILE, V5Record


class ChainStep:
    """Form chains from every shard's part of records (``base.PostShardStep``).

    ``record_parts`` (parquet, pyarrow) is imported when a part is written or read, not
    with the reader: reading a file needs neither.
    """

    name = "chains"
    version = "1"  # bump when forming chains changes its outputs for the same records
    part_file = PART_FILE

    def __init__(self, range_bytes: int | None = None) -> None:
        self.range_bytes = range_bytes  # record data formed at a time; None: RANGE_BYTES

    def write_part(self, records: Sequence[V5Record], path: Path) -> None:
        """Write one shard's records, sorted by agent run then file."""
        from agir_retrain.tasks.runs.formats.v5.record_parts import write_part

        write_part(records, path)

    def has_records(self, path: str) -> bool:
        """Whether a shard's part exists and holds records."""
        from agir_retrain.tasks.runs.formats.v5.record_parts import part_rows

        return part_rows(path) > 0

    def form_runs(self, parts: Sequence[str], counts: V5Counts | None) -> Iterator[Run]:
        """Every chain of the parts' records (lost attempts, unlinked prompts to ``counts``)."""
        from agir_retrain.tasks.runs.formats.v5 import record_parts

        return record_parts.iter_chain_runs(
            parts,
            counts if counts is not None else V5Counts(),
            self.range_bytes or record_parts.RANGE_BYTES,
        )


class V5Format(RunFormat):
    """v5 attempt records (branch v5 of the agent), recognised by their keys, never their name."""

    name = FORMAT_NAME
    counts_type = V5Counts
    post_shard = ChainStep()

    def detect(self, document: dict[str, Any]) -> bool:
        """Most of the keys every record type has (``record_reader.looks_like_v5``)."""
        return looks_like_v5(document)

    def read(
        self, source: str, data: bytes, document: dict[str, Any], limits: ReadLimits
    ) -> RunFileResult:
        """Validate the file's one record and keep it for the chain step."""
        record = read_v5_record(source, document, limits)
        return RunFileResult(
            source=source, size_bytes=len(data), file_format=self.name, pending=(record,)
        )
