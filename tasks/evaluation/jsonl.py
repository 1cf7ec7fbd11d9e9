"""JSON Lines in and out: one object a line, each bad line named by file and line number."""

from __future__ import annotations

import json
from collections.abc import Callable, Iterable, Iterator
from typing import Any

from agir_retrain.tasks.errors import AgirError
from agir_retrain.tasks.io import read_bytes, write_bytes_atomic


class EvalInputError(AgirError):
    """A tasks or completions file (or one of its lines) cannot be used."""


def line_error(path: str, line: int, problem: str) -> EvalInputError:
    """An error naming the file and line, on one line."""
    return EvalInputError(f"{path}:{line}: {' '.join(problem.split())}")


def iter_jsonl(path: str) -> Iterator[tuple[int, dict[str, Any]]]:
    """Yield (line number, object) for each non-blank line of a JSONL file or URL.

    Raises:
        EvalInputError: the file is missing, or a line is not JSON or not an object.
    """
    try:
        data = read_bytes(path)
    except FileNotFoundError as error:
        raise EvalInputError(f"{path}: no such file") from error
    loads = json_loads()
    for number, raw in enumerate(data.splitlines(), start=1):
        if not raw.strip():
            continue
        try:
            value = loads(raw)
        except ValueError as error:  # orjson's JSONDecodeError is one
            raise line_error(path, number, f"not valid JSON ({error})") from error
        if not isinstance(value, dict):
            raise line_error(path, number, f"expected a JSON object, got {type(value).__name__}")
        yield number, value


def json_loads() -> Callable[[bytes], Any]:
    """orjson's ``loads``, or the standard library's where orjson is absent.

    GRPO reads tasks files and scenarios on GPU machines that have no orjson; there NaN
    and Infinity are refused too, as orjson would.
    """
    try:
        import orjson
    except ImportError:
        return lambda raw: json.loads(raw, parse_constant=_refuse_constant)
    return orjson.loads


def _refuse_constant(name: str) -> Any:
    raise ValueError(f"{name} is not JSON")


def write_jsonl(path: str, rows: Iterable[dict[str, Any]]) -> None:
    """Write objects one a line (keys in the order given), atomically."""
    import orjson  # here: the reading side must work without it (see json_loads)

    write_bytes_atomic(path, b"".join(orjson.dumps(row) + b"\n" for row in rows))


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
