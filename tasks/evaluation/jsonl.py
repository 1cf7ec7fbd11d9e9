"""The evaluation's input errors, and the checks its files' lines share (one reader: tasks/jsonl.py)."""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

from agir_retrain.tasks.errors import AgirError
from agir_retrain.tasks.jsonl import line_problem, read_jsonl


class EvalInputError(AgirError):
    """A tasks or completions file (or one of its lines) cannot be used."""


def line_error(path: str, line: int, problem: str) -> EvalInputError:
    """An error naming the file and line, on one line."""
    return EvalInputError(line_problem(path, line, problem))


def iter_jsonl(path: str) -> Iterator[tuple[int, dict[str, Any]]]:
    """Yield (line number, object) for each non-blank line of a JSONL file or URL.

    Raises:
        EvalInputError: the file is missing, or a line is not JSON or not an object.
    """
    return read_jsonl(path, EvalInputError)


def require(
    path: str, line: int, row: dict[str, Any], key: str, kind: type | tuple[type, ...]
) -> Any:
    """The value of a required key of the right type, or a one-line error saying what is wrong."""
    if key not in row:
        raise line_error(path, line, f"missing key {key!r}")
    value = row[key]
    # bool is an int in Python; a sample number of true is still wrong.
    if not isinstance(value, kind) or (isinstance(value, bool) and bool not in _types(kind)):
        names = "/".join(t.__name__ for t in _types(kind))
        raise line_error(path, line, f"{key!r} must be {names}, got {type(value).__name__}")
    if isinstance(value, str):
        try:  # the standard library's JSON reads lone surrogates that nothing can write
            value.encode("utf-8")
        except UnicodeEncodeError:
            raise line_error(path, line, f"{key!r} is not valid UTF-8 (a lone surrogate)") from None
    return value


def require_int(path: str, line: int, row: dict[str, Any], key: str, low: int, high: int) -> int:
    """A required integer within ``[low, high]``, or a one-line error (JSON integers are unbounded)."""
    value = require(path, line, row, key, int)
    if not low <= value <= high:
        raise line_error(
            path, line, f"{key!r} must be {low} or more and at most {high}, got {str(value)[:40]}"
        )
    return value


def _types(kind: type | tuple[type, ...]) -> tuple[type, ...]:
    return kind if isinstance(kind, tuple) else (kind,)
