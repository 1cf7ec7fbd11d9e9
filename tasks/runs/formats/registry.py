"""The one list of run formats: built-in ones first, then any registered since.

The reader asks each format in turn whether a file's JSON is its own (the first yes
wins), ingest writes each format's pending records and runs its post-shard step, and
the report adds each format's counts; none of them names a format. A new format is a
module with a ``RunFormat`` subclass, and one ``register_run_format`` call.

``Run.file_schema`` stores the format's name in an enum of the registered names, so
registering also extends ``Run``'s table schema. A format registered at run time is
known to this process and the processes it forks (``ingest``'s pool); every process
writing runs must register the same formats in the same order (the enum's categories
follow it), so one that Ray workers must know is registered by a module they import.
"""

from __future__ import annotations

from typing import Any

from agir_retrain.tasks.errors import RunFileError
from agir_retrain.tasks.records import QuarantineReason, Run, run_schema
from agir_retrain.tasks.runs.fields import json_type
from agir_retrain.tasks.runs.formats.base import RunFormat
from agir_retrain.tasks.runs.formats.v4.format import Legacy2024Format, V4Format
from agir_retrain.tasks.runs.formats.v5.format import V5Format
from agir_retrain.tasks.schemas import register_table

# The report's own keys (runs/report.py), which no format's counts may take.
_REPORT_KEYS = frozenset(
    {
        "files_in", "files_read", "files_quarantined", "bytes_in", "runs_in",
        "runs_quarantined", "runs_by_class", "runs_by_reason", "unit_conventions",
        "file_schemas", "scored_records", "pairs_by_rule", "pairs_skipped_identical",
        "garble_requests", "quarantine_reasons", "garbling", "export", "shards", "timing_s",
    }
)  # fmt: skip

_FORMATS: list[RunFormat] = []


def register_run_format(run_format: RunFormat) -> RunFormat:
    """Add a format after those registered; return it (so a module can keep the instance).

    Raises:
        ValueError: its name, part file or report keys are another format's.
    """
    _check_unique(run_format)
    _FORMATS.append(run_format)
    _register_run_table()
    return run_format


def unregister_run_format(name: str) -> None:
    """Remove a registered format (a test's, say); built-in formats cannot be removed."""
    if name in _BUILT_IN:
        raise ValueError(f"{name!r} is a built-in run format")
    _FORMATS[:] = [f for f in _FORMATS if f.name != name]
    _register_run_table()


def run_formats() -> tuple[RunFormat, ...]:
    """Every registered format, in the order files are offered to them."""
    return tuple(_FORMATS)


def post_shard_formats() -> tuple[RunFormat, ...]:
    """The formats whose runs are formed after every shard is read, in registry order."""
    return tuple(f for f in _FORMATS if f.post_shard is not None)


def format_named(name: str) -> RunFormat:
    """The registered format of that name.

    Raises:
        KeyError: no format has it.
    """
    for run_format in _FORMATS:
        if run_format.name == name:
            return run_format
    raise KeyError(f"no run format named {name!r}; registered: {[f.name for f in _FORMATS]}")


def detect_format(source: str, document: Any) -> RunFormat:
    """The first registered format that claims a parsed document.

    Raises:
        RunFileError: not an object (``not_an_object``), or no format claims it
            (``unknown_schema``, naming its first keys).
    """
    if not isinstance(document, dict):
        raise RunFileError(
            source,
            QuarantineReason.NOT_AN_OBJECT,
            f"top level is a JSON {json_type(document)}, expected an object",
        )
    for run_format in _FORMATS:
        if run_format.detect(document):
            return run_format
    keys = ", ".join(sorted(map(str, document))[:8])
    raise RunFileError(
        source, QuarantineReason.UNKNOWN_SCHEMA, f"not an AGIR run file; keys: {keys}"
    )


def _check_unique(new: RunFormat) -> None:
    names = {f.name for f in _FORMATS}
    if not getattr(new, "name", None) or new.name in names:
        raise ValueError(f"a run format needs a name of its own; taken: {sorted(names)}")
    parts = {f.post_shard.part_file for f in _FORMATS if f.post_shard is not None}
    if new.post_shard is not None and new.post_shard.part_file in parts:
        raise ValueError(f"{new.name}: part file {new.post_shard.part_file!r} is taken")
    if new.counts_type is not None:
        taken = set(_REPORT_KEYS)
        for other in _FORMATS:
            if other.counts_type is not None:
                taken |= set(other.counts_type().to_dict())
        clash = taken & set(new.counts_type().to_dict())
        if clash:
            raise ValueError(f"{new.name}: report keys {sorted(clash)} are taken")


def _register_run_table() -> None:
    register_table(Run, run_schema([f.name for f in _FORMATS]))


# The built-in formats, in the order they are asked: v4's keys win over a v5 look-alike.
for _built_in in (V4Format(), Legacy2024Format(), V5Format()):
    register_run_format(_built_in)
_BUILT_IN = frozenset(f.name for f in _FORMATS)
