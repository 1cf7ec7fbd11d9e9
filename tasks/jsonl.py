"""JSON Lines, read and written: one object a line, a bad line named as ``path:line: problem``.

The one reader of the project's JSONL files (training rows, tasks, completions, rehearsal
chats). It parses with orjson where it is installed and with the standard library where it
is not (the GPU machines have no orjson); either way NaN and Infinity are refused, as JSON
has neither, and so is invalid UTF-8.
"""

from __future__ import annotations

import json
from collections.abc import Callable, Iterable, Iterator
from typing import Any

from agir_retrain.tasks.errors import AgirError, DatasetError
from agir_retrain.tasks.io import read_bytes, write_bytes_atomic


def read_jsonl(
    path: str, error: type[AgirError] = DatasetError
) -> Iterator[tuple[int, dict[str, Any]]]:
    """Yield (line number, object) for each non-blank line of a JSONL file or URL, in order.

    Lazily, so a caller checking each row reports the first bad line, whatever its kind.

    Raises:
        error: the file is missing or unreadable, or a line is not JSON or not an object;
            the message names the file (and line) on one line.
    """
    try:
        data = read_bytes(path)
    except FileNotFoundError as exc:
        raise error(f"{path}: no such file") from exc
    except OSError as exc:
        raise error(f"{path}: cannot read: {exc}") from exc
    loads = json_loads()
    for number, raw in enumerate(data.splitlines(), start=1):
        if not raw.strip():
            continue
        try:
            value = loads(raw)
        except ValueError as exc:  # orjson's JSONDecodeError and UnicodeDecodeError are ones
            raise error(line_problem(path, number, f"not valid JSON ({exc})")) from exc
        if not isinstance(value, dict):
            raise error(
                line_problem(path, number, f"expected a JSON object, got {type(value).__name__}")
            )
        yield number, value


def line_problem(path: str, line: int, problem: str) -> str:
    """``path:line: problem``, on one line."""
    return f"{path}:{line}: {' '.join(problem.split())}"


def json_loads() -> Callable[[bytes], Any]:
    """orjson's ``loads``, or the standard library's (refusing NaN and Infinity) without it."""
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
