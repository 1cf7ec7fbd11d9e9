"""Prompt-completion rows (labelled or not) and prompt-only rows: check, mix, view as pairs.

    completion rows   {"prompt": [...], "completion": [{"role": "assistant", ...}], ...}
    labelled rows     {"prompt": [...], "completion": [...], "label": true, ...}

Rows are checked before any model loads, as preference rows are. Fitting reuses the
preference rows' fitting (``fitting.fit_rows``) through a pair view: the completion stands in for both
sides, so a prompt is shortened the same way whatever the objective.
"""

from __future__ import annotations

import random
from collections.abc import Iterable
from typing import Any

from agir_retrain.tasks.errors import DatasetError
from agir_retrain.tasks.jsonl import read_jsonl
from agir_retrain.tasks.training.preference import is_messages

_NO_COMPLETION = "_no_completion"


def load_completion_rows(
    path: str, *, labelled: bool = False, allow_empty: bool = False
) -> list[dict[str, Any]]:
    """Read and check prompt-completion rows (``label`` too when ``labelled``).

    Raises:
        DatasetError: unreadable, empty (unless ``allow_empty``), a row lacking a column or
            mixing strings and message lists; the message names the row.
    """
    return check_completion_rows(path, read_jsonl(path), labelled=labelled, allow_empty=allow_empty)


def check_completion_rows(
    path: str,
    lines: Iterable[tuple[int, dict[str, Any]]],
    *,
    labelled: bool = False,
    allow_empty: bool = False,
) -> list[dict[str, Any]]:
    """Check the (line number, object) rows of a completion file read already (see above)."""
    rows = []
    for number, row in lines:
        where = f"{path}:{number}"
        needed = ("prompt", "completion", "label") if labelled else ("prompt", "completion")
        missing = [key for key in needed if key not in row]
        if missing:
            raise DatasetError(f"{where}: missing column(s) {missing}; got {sorted(row)}")
        strings = isinstance(row["prompt"], str) and isinstance(row["completion"], str)
        if not strings and not (is_messages(row["prompt"]) and is_messages(row["completion"])):
            raise DatasetError(
                f"{where}: prompt and completion must both be strings or both lists of "
                "{role, content} messages"
            )
        if labelled and not isinstance(row["label"], bool):
            raise DatasetError(f"{where}: label must be true or false, got {row['label']!r}")
        rows.append(row)
    if not rows and not allow_empty:
        raise DatasetError(f"{path}: no rows")
    return rows


def rehearsal_rows(path: str) -> list[dict[str, Any]]:
    """General chat rows as prompt-completion: ``{messages}`` (the last turn, an assistant's,
    is the completion) or ``{prompt, completion}`` rows."""
    rows = []
    for number, row in read_jsonl(path):
        where = f"{path}:{number}"
        if is_messages(row.get("messages")):
            messages = row["messages"]
            if len(messages) < 2 or messages[-1]["role"] != "assistant":
                raise DatasetError(
                    f"{where}: messages must end with an assistant turn after a prompt"
                )
            rows.append(
                {"prompt": messages[:-1], "completion": messages[-1:], "source": "rehearsal"}
            )
        elif is_messages(row.get("prompt")) and is_messages(row.get("completion")):
            rows.append(
                {"prompt": row["prompt"], "completion": row["completion"], "source": "rehearsal"}
            )
        else:
            raise DatasetError(
                f"{where}: a rehearsal row needs messages (a chat ending with the assistant) or "
                "prompt and completion message lists"
            )
    if not rows:
        raise DatasetError(f"{path}: no rehearsal rows")
    return rows


def mix_rehearsal(
    rows: list[dict[str, Any]], rehearsal: list[dict[str, Any]], share: float, seed: int
) -> list[dict[str, Any]]:
    """Mix ``share`` rehearsal rows per training row into ``rows``, deterministically from ``seed``.

    The rehearsal rows are drawn without replacement (all of them when the file has fewer)
    and each is placed at a seeded position, so the task rows keep their order.
    """
    wanted = min(len(rehearsal), round(len(rows) * share))
    if wanted == 0:
        return list(rows)
    rng = random.Random(seed)
    drawn = rng.sample(rehearsal, wanted)
    mixed = list(rows)
    for row in drawn:
        mixed.insert(rng.randrange(len(mixed) + 1), row)
    return mixed


def as_pairs(rows: list[dict[str, Any]]) -> list[dict[str, Any]]:
    """A pair view for ``fitting.fit_rows``/``conform_rows``: the completion on both sides.

    A prompt-only row gets an empty assistant turn, removed again by ``from_pairs``.
    """
    out = []
    for row in rows:
        if "completion" in row:
            completion = row["completion"]
            extra = {}
        else:
            empty = "" if isinstance(row["prompt"], str) else [{"role": "assistant", "content": ""}]
            completion, extra = empty, {_NO_COMPLETION: True}
        out.append({**row, **extra, "chosen": completion, "rejected": completion})
    return out


def from_pairs(rows: list[dict[str, Any]]) -> list[dict[str, Any]]:
    """Undo ``as_pairs``: the (conformed) chosen side back as the completion."""
    out = []
    for row in rows:
        plain = {k: v for k, v in row.items() if k not in ("chosen", "rejected", _NO_COMPLETION)}
        if not row.get(_NO_COMPLETION):
            plain["completion"] = row["chosen"]
        out.append(plain)
    return out


def is_pair_rows(rows: list[dict[str, Any]]) -> bool:
    """Whether these are preference rows (``chosen``/``rejected``) rather than completions."""
    return not rows or "chosen" in rows[0]


def code_prompts(rows: list[dict[str, Any]]) -> list[tuple[str, tuple[dict[str, str], ...]]]:
    """(task id, prompt) of every distinct code prompt of completion rows, in first-seen order."""
    seen: dict[str, tuple[dict[str, str], ...]] = {}
    for number, row in enumerate(rows, start=1):
        if row.get("prompt_kind", "code") != "code" or isinstance(row["prompt"], str):
            continue
        task_id = f"{row.get('run_id', f'row{number}')}/code"
        seen.setdefault(task_id, tuple(row["prompt"]))
    return list(seen.items())
