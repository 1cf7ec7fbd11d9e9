"""What a run format is: the protocol each format module implements, and its parts.

A format recognises its files by their parsed JSON (``detect``), validates and reads
one file (``read``) into runs, quarantine entries, or *pending records*: records whose
runs can only be formed once every shard is read, because one run's records are spread
over several files (v5's chains). Such a format has a ``PostShardStep``. A format may
also keep counts of its own in the ingest report (``FormatCounts``).

Formats are registered in ``registry.py``; nothing else in the tree names one.
"""

from __future__ import annotations

from collections.abc import Iterator, Sequence
from pathlib import Path
from typing import Any, ClassVar, Protocol, Self

from agir_retrain.tasks.records import Run
from agir_retrain.tasks.runs.fields import ReadLimits, RunFileResult


class FormatCounts(Protocol):
    """A format's own counts in the ingest report; the report adds and renders them.

    Made with no arguments (all zero). ``to_dict`` gives the report keys it owns, in a
    stable order (they follow the shared keys in ``report.json``); ``from_dict`` reads
    them back from a whole report.
    """

    def add_file(self, result: RunFileResult) -> None:
        """Count one file this format read (its pending records, say)."""
        ...

    def merge(self, other: Self) -> None:
        """Add another shard's counts into these."""
        ...

    def to_dict(self) -> dict[str, Any]:
        """The counts as JSON-ready report entries."""
        ...

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> Self:
        """Read the counts back from a report's dict (keys absent: zero)."""
        ...


class PostShardStep(Protocol):
    """Forms a format's runs from every shard's pending records, once every shard is read.

    Each shard writes its pending records of the format to ``part_file`` in its folder;
    the step reads every shard's part and yields runs, which are then scored, paired and
    gathered like a shard's (``ingest.ingest_post_shard``). Its output must depend only on
    the records, never on how the files were cut into shards.
    """

    name: str  # names the step's folder and its timing in the build report ("chains")
    version: str  # bump when the step's runs change for the same records (a cache key)
    part_file: str  # the file each shard writes this format's pending records to

    def write_part(self, records: Sequence[Any], path: Path) -> None:
        """Write one shard's pending records of this format to ``path``."""
        ...

    def has_records(self, path: str) -> bool:
        """Whether a part exists and holds any record."""
        ...

    def form_runs(self, parts: Sequence[str], counts: FormatCounts | None) -> Iterator[Run]:
        """Yield every run the records in ``parts`` form, in an order they alone decide."""
        ...


class RunFormat:
    """A run-file format: subclass it, give it a ``name``, ``detect`` and ``read``; register it.

    ``read`` must never raise on bad content but a ``RunFileError`` (the whole file is
    quarantined with its reason); a run that cannot be read is a ``Quarantined`` entry
    of the result, and the file's other runs are kept. Runs it returns carry
    ``file_schema=self.name``; pending records need a ``post_shard`` step.
    """

    name: ClassVar[str]  # stored in Run.file_schema and counted in report.file_schemas
    counts_type: ClassVar[type[FormatCounts] | None] = None  # this format's report counts
    post_shard: PostShardStep | None = None  # how runs spread over files are formed

    def detect(self, document: dict[str, Any]) -> bool:
        """Whether a run file's JSON object is written in this format (the first yes wins)."""
        raise NotImplementedError

    def read(
        self, source: str, data: bytes, document: dict[str, Any], limits: ReadLimits
    ) -> RunFileResult:
        """Read one file this format detected (``data`` its bytes, ``document`` its JSON).

        Raises:
            RunFileError: the file as a whole is malformed; it is quarantined.
        """
        raise NotImplementedError
