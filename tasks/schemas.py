"""Which polars schema each stored record type has, and how a stage adds its own types.

The foundations' record types are listed here; a stage registers the types it owns (a
run format's pending records) and ``Run``, whose ``file_schema`` enum the run-format
registry sets (``runs/formats/registry.py``). Kept apart from ``tables.py``, which does
the conversion, so that registering a type (at the reader's import) needs no pyarrow.
"""

from __future__ import annotations

from collections.abc import Callable
from enum import StrEnum
from typing import Any

import polars as pl

from agir_retrain.tasks.records import (
    GARBLE_REQUEST_SCHEMA,
    GARBLE_RESULT_SCHEMA,
    PAIR_SCHEMA,
    QUARANTINE_SCHEMA,
    SCORED_SCHEMA,
    GarbleRequest,
    GarbleResult,
    Pair,
    Quarantined,
    ScoredRecord,
)

SCHEMAS: dict[type, pl.Schema] = {
    GarbleRequest: GARBLE_REQUEST_SCHEMA,
    GarbleResult: GARBLE_RESULT_SCHEMA,
    ScoredRecord: SCORED_SCHEMA,
    Pair: PAIR_SCHEMA,
    Quarantined: QUARANTINE_SCHEMA,
}  # and Run, from the run-format registry
# Column readers of registered types, beyond the shared ones (``tables.from_frame``).
EXTRA_READERS: dict[type, dict[str, Callable[[Any], Any]]] = {}
_version = 0  # bumped at each registration: what tables.py caches per type is then stale


def register_table(
    record_type: type,
    schema: pl.Schema,
    *,
    enums: dict[str, type[StrEnum]] | None = None,
    nested: dict[str, Callable[[Any], Any]] | None = None,
) -> None:
    """Name the schema a record type is stored with (again: the last one wins).

    Args:
        enums: columns read back as these enums, beyond the shared ones in ``tables.py``.
        nested: columns read back through these functions (a list column as a tuple).
    """
    global _version
    SCHEMAS[record_type] = schema
    EXTRA_READERS[record_type] = {**(enums or {}), **(nested or {})}
    _version += 1


def schema_version() -> int:
    """A number that changes whenever a type is registered (a cache key)."""
    return _version
