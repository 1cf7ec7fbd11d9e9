"""Preference rows (``prompt``, ``chosen``, ``rejected``): read, checked, given an explicit prompt.

Any preference JSONL is accepted: ours (conversational, with provenance), TRL's standard
format (strings) and TRL's conversational format, with an explicit prompt or an implicit
one (``chosen``/``rejected`` as whole conversations). Every row is checked before a
tokenizer or model is loaded, so a bad file stops the program in seconds with a message
that names the row and the problem.
"""

from __future__ import annotations

from typing import Any

from agir_retrain.tasks.errors import DatasetError
from agir_retrain.tasks.jsonl import read_jsonl


def load_rows(path: str, *, allow_empty: bool = False) -> list[dict[str, Any]]:
    """Read and check every row of a preference JSONL file.

    Raises:
        DatasetError: unreadable, empty (unless ``allow_empty``), not JSON lines, or a row
            lacking ``chosen``/``rejected`` or holding the wrong types; the message names the row.
    """
    rows = [_checked(path, number, row) for number, row in read_jsonl(path)]
    if not rows and not allow_empty:
        raise DatasetError(f"{path}: no rows; a preference file needs at least one")
    formats = {row_format(row) for row in rows}
    if len(formats) > 1:
        raise DatasetError(f"{path}: rows mix formats {sorted(formats)}; use one format per file")
    return rows


def row_format(row: dict[str, Any]) -> str:
    """``conversational`` (lists of messages) or ``standard`` (strings)."""
    return "standard" if isinstance(row["chosen"], str) else "conversational"


def _checked(path: str, number: int, row: dict[str, Any]) -> dict[str, Any]:
    where = f"{path}:{number}"
    missing = [key for key in ("chosen", "rejected") if key not in row]
    if missing:
        raise DatasetError(
            f"{where}: missing column(s) {missing}; a preference row needs chosen and rejected "
            f"(and prompt, unless they are whole conversations); got {sorted(row)}"
        )
    kinds = {key: _kind(row[key]) for key in ("prompt", "chosen", "rejected") if key in row}
    if None in kinds.values():
        bad = [key for key, kind in kinds.items() if kind is None]
        raise DatasetError(
            f"{where}: {bad} must be a string or a list of {{role, content}} messages, "
            f"got {[type(row[k]).__name__ for k in bad]}"
        )
    if len(set(kinds.values())) > 1:
        raise DatasetError(
            f"{where}: prompt, chosen and rejected mix strings and message lists: {kinds}"
        )
    if "prompt" not in row and kinds["chosen"] == "standard":
        raise DatasetError(f"{where}: string rows need a prompt column")
    return row


def _kind(value: Any) -> str | None:
    if isinstance(value, str):
        return "standard"
    return "conversational" if is_messages(value) else None


def is_messages(value: Any) -> bool:
    """Whether a value is a non-empty list of ``{role, content}`` messages (strings both)."""
    return (
        isinstance(value, list)
        and bool(value)
        and all(
            isinstance(m, dict)
            and isinstance(m.get("role"), str)
            and isinstance(m.get("content"), str)
            for m in value
        )
    )


def explicit_prompt(row: dict[str, Any]) -> dict[str, Any]:
    """Give a conversational row without ``prompt`` one: the messages before the last turn."""
    if "prompt" in row:
        return row
    chosen, rejected = row["chosen"], row["rejected"]
    shared = 0
    while shared < min(len(chosen), len(rejected)) - 1 and chosen[shared] == rejected[shared]:
        shared += 1
    return {
        **row,
        "prompt": chosen[:shared],
        "chosen": chosen[shared:],
        "rejected": rejected[shared:],
    }
