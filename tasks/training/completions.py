"""Prompt-completion data (SFT, KTO) and prompt-only data (GRPO): find, check, mix, fit.

    sft/train.jsonl   {"prompt": [...], "completion": [{"role": "assistant", ...}], ...}
    kto/train.jsonl   {"prompt": [...], "completion": [...], "label": true, ...}

Rows are checked before any model loads, as the DPO rows are. Fitting reuses the DPO
rows' fitting (``data.fit_rows``) through a pair view: the completion stands in for both
sides, so a prompt is shortened the same way whatever the objective.
"""

from __future__ import annotations

import random
from typing import Any

from agir_retrain.tasks.errors import DatasetError
from agir_retrain.tasks.io import exists, join
from agir_retrain.tasks.training.data import DataFiles, read_jsonl

_NO_COMPLETION = "_no_completion"


def locate_split(dataset: str, folder: str, eval_dataset: str | None = None) -> DataFiles:
    """``<folder>/train.jsonl`` (and ``eval.jsonl`` beside it) of a dataset, or one JSONL file."""
    if dataset.endswith(".jsonl"):
        train = dataset
    else:
        train = join(dataset, folder, "train.jsonl")
    if not exists(train):
        raise DatasetError(
            f"{train}: no such file; give the dataset flow's folder (it writes {folder}/train.jsonl) "
            "or a .jsonl file"
        )
    if eval_dataset is not None:
        if not exists(eval_dataset):
            raise DatasetError(f"{eval_dataset}: no such eval file")
        return DataFiles(train=train, eval=eval_dataset)
    sibling = train[: -len("train.jsonl")] + "eval.jsonl" if train.endswith("train.jsonl") else None
    return DataFiles(train=train, eval=sibling if sibling and exists(sibling) else None)


def _is_messages(value: Any) -> bool:
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


def load_completion_rows(
    path: str, *, labelled: bool = False, allow_empty: bool = False
) -> list[dict[str, Any]]:
    """Read and check prompt-completion rows (``label`` too when ``labelled``).

    Raises:
        DatasetError: unreadable, empty (unless ``allow_empty``), a row lacking a column or
            mixing strings and message lists; the message names the row.
    """
    rows = []
    for number, row in read_jsonl(path):
        where = f"{path}, line {number}"
        if not isinstance(row, dict):
            raise DatasetError(f"{where}: a row must be a JSON object, got {type(row).__name__}")
        needed = ("prompt", "completion", "label") if labelled else ("prompt", "completion")
        missing = [key for key in needed if key not in row]
        if missing:
            raise DatasetError(f"{where}: missing column(s) {missing}; got {sorted(row)}")
        strings = isinstance(row["prompt"], str) and isinstance(row["completion"], str)
        if not strings and not (_is_messages(row["prompt"]) and _is_messages(row["completion"])):
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
        where = f"{path}, line {number}"
        if isinstance(row, dict) and _is_messages(row.get("messages")):
            messages = row["messages"]
            if len(messages) < 2 or messages[-1]["role"] != "assistant":
                raise DatasetError(
                    f"{where}: messages must end with an assistant turn after a prompt"
                )
            rows.append(
                {"prompt": messages[:-1], "completion": messages[-1:], "source": "rehearsal"}
            )
        elif (
            isinstance(row, dict)
            and _is_messages(row.get("prompt"))
            and _is_messages(row.get("completion"))
        ):
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
    """A pair view for ``data.fit_rows``/``conform_rows``: the completion on both sides.

    A prompt-only row (GRPO) gets an empty assistant turn, removed again by ``from_pairs``.
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
    """(task id, prompt) of every distinct code prompt of SFT rows, in order of first sight."""
    seen: dict[str, tuple[dict[str, str], ...]] = {}
    for number, row in enumerate(rows, start=1):
        if row.get("prompt_kind", "code") != "code" or isinstance(row["prompt"], str):
            continue
        task_id = f"{row.get('run_id', f'row{number}')}/code"
        seen.setdefault(task_id, tuple(row["prompt"]))
    return list(seen.items())
