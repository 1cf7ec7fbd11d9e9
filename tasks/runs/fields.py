"""What every run-file reader shares: its limits, its result, and typed access to JSON fields."""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Any

from agir_retrain.tasks.errors import RunFileError
from agir_retrain.tasks.records import Quarantined, QuarantineReason, Run


@dataclass(frozen=True, slots=True, kw_only=True)
class ReadLimits:
    """Bounds that keep one bad file from taking the machine down."""

    max_file_bytes: int = 512 << 20
    max_message_chars: int = 4 << 20


@dataclass(frozen=True, slots=True, kw_only=True)
class RunFileResult:
    """What one run file gave: its runs, and what of it was quarantined."""

    source: str
    size_bytes: int
    runs: tuple[Run, ...] = ()
    quarantined: tuple[Quarantined, ...] = ()
    runs_found: int = 0  # copy agents seen, read or quarantined
    file_quarantined: bool = False


def require(
    source: str, obj: dict, key: str, kind: type, where: str, run_id: str | None = None
) -> Any:
    """Return ``obj[key]``, which must exist and be of ``kind``.

    Raises:
        RunFileError: the key is missing (``missing_key``) or of another type (``wrong_type``).
    """
    if key not in obj:
        raise RunFileError(source, QuarantineReason.MISSING_KEY, f"{where}: no {key!r}", run_id)
    value = obj[key]
    if not isinstance(value, kind):
        raise RunFileError(
            source,
            QuarantineReason.WRONG_TYPE,
            f"{where}: {key!r} is a JSON {json_type(value)}, expected {_KIND_NAMES[kind]}",
            run_id,
        )
    return value


def optional(
    source: str, obj: dict, key: str, kind: type, where: str, run_id: str | None = None
) -> Any:
    """Return ``obj[key]`` if set (not missing, not null), which must then be of ``kind``."""
    if obj.get(key) is None:
        return None
    return require(source, obj, key, kind, where, run_id)


def optional_number(
    source: str, obj: dict, key: str, where: str, run_id: str | None = None
) -> float | None:
    """Return ``obj[key]`` as a finite float if set; None when missing or null.

    Raises:
        RunFileError: not a number (``wrong_type``) or not finite (``non_finite_number``).
    """
    value = obj.get(key)
    if value is None:
        return None
    if isinstance(value, bool) or not isinstance(value, int | float):
        raise RunFileError(
            source,
            QuarantineReason.WRONG_TYPE,
            f"{where}: {key!r} is a JSON {json_type(value)}, expected a number",
            run_id,
        )
    if not math.isfinite(value):
        raise RunFileError(
            source, QuarantineReason.NON_FINITE_NUMBER, f"{where}: {key!r} is {value}", run_id
        )
    return float(value)


_KIND_NAMES = {dict: "an object", list: "an array", str: "a string"}


def json_type(value: Any) -> str:
    """Name a Python value's JSON type, for messages."""
    if value is None:
        return "null"
    if isinstance(value, bool):
        return "boolean"
    if isinstance(value, int | float):
        return "number"
    if isinstance(value, str):
        return "string"
    if isinstance(value, list):
        return "array"
    return "object"


def preview(value: Any, limit: int = 80) -> str:
    """Show a value in at most ``limit`` characters, for messages."""
    text = repr(value)
    return text if len(text) <= limit else text[: limit - 3] + "..."
