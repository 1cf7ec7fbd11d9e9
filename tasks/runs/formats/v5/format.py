"""The v5 format: one attempt record per file; a run is a chain of records, formed post-shard.

Everything v5 lives in this package: ``schema.py`` (the record kept), ``record_reader.py``
(detection and validation of one record), ``chains.py`` (chains and their classes),
``record_parts.py`` (records carried from the shards to the chain step), ``counts.py``
(its report entries). See ``docs/run-format.md`` ("v5 records").
"""

from __future__ import annotations

from typing import Any

from agir_retrain.tasks.runs.fields import ReadLimits, RunFileResult
from agir_retrain.tasks.runs.formats.base import RunFormat
from agir_retrain.tasks.runs.formats.v5.counts import V5Counts
from agir_retrain.tasks.runs.formats.v5.record_parts import ChainStep
from agir_retrain.tasks.runs.formats.v5.record_reader import looks_like_v5, read_v5_record
from agir_retrain.tasks.runs.formats.v5.schema import FORMAT_NAME


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
