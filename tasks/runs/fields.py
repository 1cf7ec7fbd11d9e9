"""What every run-file reader shares: its limits, its result, and typed access to JSON fields."""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Any

from agir_retrain.tasks.errors import RunFileError
from agir_retrain.tasks.records import Quarantined, QuarantineReason, Run
from agir_retrain.tasks.settings.build import ReadSettings


@dataclass(frozen=True, slots=True, kw_only=True)
class ReadLimits:
    """Bounds that keep one bad file from taking the machine down."""

    max_file_bytes: int = 512 << 20
    max_message_chars: int = 4 << 20

    @classmethod
    def from_settings(cls, read: ReadSettings) -> ReadLimits:
        """The reader's limits from the ``read`` settings section."""
        return cls(max_file_bytes=read.max_file_bytes, max_message_chars=read.max_message_chars)


@dataclass(frozen=True, slots=True, kw_only=True)
class RunFileResult:
    """What one run file gave: its runs, what of it was quarantined, and pending records."""

    source: str
    size_bytes: int
    runs: tuple[Run, ...] = ()
    quarantined: tuple[Quarantined, ...] = ()
    runs_found: int = 0  # copy agents seen, read or quarantined
    file_quarantined: bool = False
    file_format: str | None = None  # the run format that read it (None: not read)
    # Records whose runs are formed once every shard is read, by the format's post-shard
    # step (a v5 file's one attempt record, which joins a chain of other files' records).
    pending: tuple[Any, ...] = ()


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
    try:
        number = float(value)
    except OverflowError:  # an integer literal past float range, such as 10**400
        number = math.inf if value > 0 else -math.inf
    if not math.isfinite(number):
        raise RunFileError(
            source,
            QuarantineReason.NON_FINITE_NUMBER,
            f"{where}: {key!r} is {_short_number(value)}",
            run_id,
        )
    return number


def require_finite_bytes(
    source: str, space_freed_bytes: float, raw: float | None, where: str, run_id: str | None
) -> float:
    """Return a figure normalised to bytes if it is finite (``1e308`` KiB is not).

    Raises:
        RunFileError: the figure is infinite or NaN once normalised (``non_finite_number``).
    """
    if not math.isfinite(space_freed_bytes):
        raise RunFileError(
            source,
            QuarantineReason.NON_FINITE_NUMBER,
            f"{where}: space_freed {_short_number(raw)} is {space_freed_bytes} bytes",
            run_id,
        )
    return space_freed_bytes


def _short_number(value: object) -> str:
    text = str(value)  # a 400-digit integer is shown by its size, not in full
    return text if len(text) <= 40 else f"{text[:12]}...({len(text)} digits)"


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
