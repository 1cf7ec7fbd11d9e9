"""``completions.jsonl``: what a model wrote for each task, one completion a line.

    {"task_id": "run#0/code", "model": "base", "sample": 0, "completion": "```python\\n...```"}

Any model's output (a vLLM server, an API) can be judged the same way as samples drawn
here; a completion for a task the tasks file does not hold is an error.
"""

from __future__ import annotations

from collections.abc import Collection, Iterable, Sequence

from agir_retrain.tasks.environment.contract import Completion
from agir_retrain.tasks.evaluation.jsonl import (
    EvalInputError,
    iter_jsonl,
    line_error,
    require,
    require_int,
)
from agir_retrain.tasks.jsonl import write_jsonl

COMPLETION_KEYS = ("task_id", "model", "sample", "completion")
MAX_SAMPLE = (1 << 31) - 1  # sample numbers are stored as 64-bit integers; no model needs more


def read_completions(path: str, task_ids: Collection[str] | None = None) -> list[Completion]:
    """Read and check a completions file; with ``task_ids``, unknown task ids are errors.

    Raises:
        EvalInputError: a bad line, a duplicate (task, model, sample), an unknown task,
            or no completion at all; the message names the file and line.
    """
    completions: list[Completion] = []
    seen: dict[tuple[str, str, int], int] = {}
    for line, row in iter_jsonl(path):
        task_id = require(path, line, row, "task_id", str)
        model = require(path, line, row, "model", str)
        sample = require_int(path, line, row, "sample", 0, MAX_SAMPLE)
        text = require(path, line, row, "completion", str)
        if not task_id or not model:
            raise line_error(path, line, "'task_id' and 'model' must not be empty")
        if task_ids is not None and task_id not in task_ids:
            raise line_error(path, line, f"task {task_id!r} is not in the tasks file")
        key = (task_id, model, sample)
        if key in seen:
            raise line_error(path, line, f"duplicate completion {key} (first on line {seen[key]})")
        seen[key] = line
        completions.append(Completion(task_id=task_id, model=model, sample=sample, completion=text))
    if not completions:
        raise EvalInputError(f"{path}: no completions in the file")
    return sort_completions(completions)


def sort_completions(completions: Iterable[Completion]) -> list[Completion]:
    """Completions in their canonical order: by model, task, sample."""
    return sorted(completions, key=lambda c: (c.model, c.task_id, c.sample))


def write_completions(path: str, completions: Sequence[Completion]) -> None:
    """Write completions one a line, in canonical order, atomically."""
    write_jsonl(
        path,
        (
            {"task_id": c.task_id, "model": c.model, "sample": c.sample, "completion": c.completion}
            for c in sort_completions(completions)
        ),
    )
