"""Evaluation tasks: prompts bound to scenarios, from a built dataset's held-out runs or a file.

    {"task_id": "run#0/code", "prompt": [{"role": "system", "content": "..."}, ...],
     "scenario": "debian-like", "env_blocks": "prompt"}

A dataset's held-out runs are those of its preference eval split (the run ids of
``PREFERENCE_EVAL``): the trainer never saw them. Each gives its code prompt (the
conversation through its code request, as the agent asked it) and, optionally, its
strategy prompt. Scenarios are dealt round-robin over the tasks sorted by id.

A prompt describes the container the agent saw in its ``<BasicEnvInfos>`` and
``<SpecialEnvInfos>`` blocks. With ``env_blocks="scenario"`` the first such block is
given the scenario's own description and any later one a pointer to it, so a program
written for what the prompt says meets the same files in the sandbox; a task records
``"scenario"`` only when a block was replaced.
"""

from __future__ import annotations

import logging
import re
from collections.abc import Callable, Iterable, Sequence
from typing import TYPE_CHECKING, Any, Literal

from agir_retrain.tasks.chat import Role
from agir_retrain.tasks.environment.contract import EvalTask
from agir_retrain.tasks.evaluation.jsonl import (
    EvalInputError,
    iter_jsonl,
    line_error,
    require,
)
from agir_retrain.tasks.filenames import PREFERENCE_EVAL, RUNS_FILE
from agir_retrain.tasks.io import exists, join
from agir_retrain.tasks.jsonl import write_jsonl

if TYPE_CHECKING:  # records import polars, which training reads tasks files without
    from agir_retrain.tasks.records import PromptKind

log = logging.getLogger(__name__)

EnvBlocks = Literal["prompt", "scenario"]
TASK_KEYS = ("task_id", "prompt", "scenario")
ENV_BLOCK_CHOICES = ("prompt", "scenario")
HELD_OUT_FILE = PREFERENCE_EVAL
_ROLES = frozenset(r.value for r in Role)
_ENV_BLOCK = re.compile(r"<(BasicEnvInfos|SpecialEnvInfos)>.*?</\1>", re.DOTALL)
POINTER = "(the machine is described in the block above)"


def task_id_of(run_id: str, kind: PromptKind) -> str:
    """A task's id: its run and which of the run's prompts it asks."""
    return f"{run_id}/{kind.value}"


def held_out_run_ids(dataset: str) -> list[str]:
    """The run ids of a built dataset's preference eval split, sorted.

    Raises:
        EvalInputError: the folder has no preference eval split (not a built dataset).
    """
    path = join(dataset, HELD_OUT_FILE)
    if not exists(path):
        raise EvalInputError(
            f"{dataset}: no {HELD_OUT_FILE}; build the dataset with `agir-retrain dataset` "
            "(its eval split names the held-out runs)"
        )
    ids = set()
    for _line, row in iter_jsonl(path):
        if isinstance(row.get("run_id"), str):
            ids.add(row["run_id"])
    return sorted(ids)


def replace_env_blocks(
    messages: Sequence[dict[str, str]], description: str
) -> tuple[tuple[dict[str, str], ...], int]:
    """The messages with their env blocks replaced (see the module docstring), and how many."""
    replaced = 0

    def swap(match: re.Match[str]) -> str:
        nonlocal replaced
        replaced += 1
        tag = match.group(1)
        body = description.strip() if replaced == 1 else POINTER
        return f"<{tag}>\n{body}\n</{tag}>"

    out = tuple(
        {"role": m["role"], "content": _ENV_BLOCK.sub(swap, m["content"])} for m in messages
    )
    return out, replaced


def bind_scenarios(
    prompts: Sequence[tuple[str, tuple[dict[str, str], ...]]],
    scenarios: Sequence[str],
    env_blocks: EnvBlocks,
    describe: Callable[[str], str] | None = None,
) -> list[EvalTask]:
    """Tasks from (task id, prompt) pairs: scenarios dealt round-robin over the sorted ids.

    ``describe`` gives a scenario's description (by name or path); it is needed only
    for ``env_blocks="scenario"``.
    """
    if not scenarios:
        raise EvalInputError("no scenarios given: name at least one profile or scenario file")
    if env_blocks not in ENV_BLOCK_CHOICES:
        raise EvalInputError(f"env_blocks={env_blocks!r}: choose one of {ENV_BLOCK_CHOICES}")
    descriptions: dict[str, str] = {}
    tasks = []
    for index, (task_id, prompt) in enumerate(sorted(prompts, key=lambda p: p[0])):
        scenario = scenarios[index % len(scenarios)]
        used: EnvBlocks = "prompt"
        if env_blocks == "scenario":
            if describe is None:
                raise EvalInputError("env_blocks='scenario' needs a scenario description")
            if scenario not in descriptions:
                descriptions[scenario] = describe(scenario)
            prompt, replaced = replace_env_blocks(prompt, descriptions[scenario])
            used = "scenario" if replaced else "prompt"
        tasks.append(EvalTask(task_id=task_id, prompt=prompt, scenario=scenario, env_blocks=used))
    return tasks


def tasks_from_dataset(
    dataset: str,
    *,
    scenarios: Sequence[str],
    env_blocks: EnvBlocks = "prompt",
    include_strategy_prompts: bool = False,
    max_tasks: int | None = None,
    describe: Callable[[str], str] | None = None,
) -> list[EvalTask]:
    """Tasks from the held-out runs of a built dataset (``runs.parquet`` + its eval split).

    ``max_tasks`` keeps the first tasks by id (a stable subset for quick checks).
    """
    # Here: training reads tasks files with this module on GPU machines that have no polars.
    import polars as pl

    from agir_retrain.tasks.records import PromptKind

    run_ids = held_out_run_ids(dataset)
    if not run_ids:
        raise EvalInputError(
            f"{dataset}: the preference eval split is empty; rebuild with a larger export.eval_share"
        )
    runs = (
        pl.scan_parquet(join(dataset, RUNS_FILE))
        .filter(pl.col("run_id").is_in(run_ids))
        .select("run_id", "conversation", "strategy_turns", "code_turns")
        .sort("run_id")
        .collect()
    )
    prompts: list[tuple[str, tuple[dict[str, str], ...]]] = []
    for run_id, conversation, strategy_turns, code_turns in runs.iter_rows():
        messages = tuple({"role": m["role"], "content": m["content"]} for m in conversation)
        if code_turns > 0:
            prompts.append((task_id_of(run_id, PromptKind.CODE), messages[:code_turns]))
        if include_strategy_prompts and strategy_turns > 0:
            prompts.append((task_id_of(run_id, PromptKind.STRATEGY), messages[:strategy_turns]))
    prompts.sort(key=lambda p: p[0])
    if max_tasks is not None:
        prompts = prompts[:max_tasks]
    if not prompts:
        raise EvalInputError(f"{dataset}: no held-out run has a code prompt")
    log.info("%d tasks from %d held-out runs of %s", len(prompts), runs.height, dataset)
    return bind_scenarios(prompts, scenarios, env_blocks, describe)


def read_tasks(path: str) -> list[EvalTask]:
    """Read and check a tasks file (ours or a user's); sorted by task id.

    Keys beyond the contract's are ignored, except ``env_blocks``, which is checked.

    Raises:
        EvalInputError: a bad line (named by file and line), a duplicate id, or no task.
    """
    return parse_tasks(path, iter_jsonl(path))


def is_task_row(row: dict[str, object]) -> bool:
    """Whether a JSONL row reads as an evaluation task (it names its scenario)."""
    return "scenario" in row


def parse_tasks(path: str, rows: Iterable[tuple[int, dict[str, Any]]]) -> list[EvalTask]:
    """Check the (line number, object) rows of a tasks file read already; sorted by task id."""
    tasks: dict[str, EvalTask] = {}
    lines: dict[str, int] = {}
    for line, row in rows:
        task_id = require(path, line, row, "task_id", str)
        prompt = require(path, line, row, "prompt", list)
        scenario = require(path, line, row, "scenario", str)
        env_blocks = row.get("env_blocks", "prompt")
        if not task_id or not scenario:
            raise line_error(path, line, "'task_id' and 'scenario' must not be empty")
        if env_blocks not in ENV_BLOCK_CHOICES:
            raise line_error(path, line, f"'env_blocks' must be one of {ENV_BLOCK_CHOICES}")
        messages = _messages(path, line, prompt)
        if task_id in tasks:
            raise line_error(
                path, line, f"duplicate task_id {task_id!r} (first on line {lines[task_id]})"
            )
        tasks[task_id] = EvalTask(
            task_id=task_id, prompt=messages, scenario=scenario, env_blocks=env_blocks
        )
        lines[task_id] = line
    if not tasks:
        raise EvalInputError(f"{path}: no tasks in the file")
    return [tasks[task_id] for task_id in sorted(tasks)]


def _messages(path: str, line: int, prompt: list) -> tuple[dict[str, str], ...]:
    if not prompt:
        raise line_error(path, line, "'prompt' is empty: give at least one message")
    messages = []
    for index, message in enumerate(prompt):
        if (
            not isinstance(message, dict)
            or not {"role", "content"} <= set(message)
            or message["role"] not in _ROLES
            or not isinstance(message["content"], str)
        ):
            raise line_error(
                path,
                line,
                f"prompt message {index} must be {{'role': one of {sorted(_ROLES)}, "
                "'content': a string}",
            )
        messages.append({"role": message["role"], "content": message["content"]})
    return tuple(messages)


def write_tasks(path: str, tasks: Sequence[EvalTask]) -> None:
    """Write tasks one a line (the contract's keys, then ``env_blocks``), sorted, atomically."""
    write_jsonl(
        path,
        (
            {
                "task_id": t.task_id,
                "prompt": list(t.prompt),
                "scenario": t.scenario,
                "env_blocks": t.env_blocks,
            }
            for t in sorted(tasks, key=lambda t: t.task_id)
        ),
    )
