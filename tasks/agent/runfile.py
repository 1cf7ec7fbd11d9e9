"""A played run written as the agent writes it: ``full_agent_data_<time>.json``, v4, KiB units.

The layout is the agent's (``shared/spec/agir-run-format.md``): the main agent holds the
environment turns and the strategy block twice, each copy agent the strategy block once
and its code turns, the env agent the basic environment and ``model_name`` (so the reader
applies the KiB, new-minus-old convention). Written with ``json.dumps(indent=2)``, as the
agent's ``json.dump`` does. The time in the name is a function of the task and the run,
never of the clock, so the same collection writes the same files.
"""

from __future__ import annotations

import hashlib
import json
from datetime import UTC, datetime, timedelta
from typing import Any

from agir_retrain.tasks.agent.play import RunPlay
from agir_retrain.tasks.agent.prompts import (
    basic_env_figures,
    basic_env_message,
)
from agir_retrain.tasks.environment.scenario import describe_scenario, scenario_to_json
from agir_retrain.tasks.io import join, write_bytes_atomic

RUNS_FOLDER = "runs"
ATTEMPTS_FOLDER = "attempts"
RUN_FILE_EPOCH = datetime(2026, 1, 1, tzinfo=UTC)
_SECONDS_PER_TASK_SLOT = 365 * 86_400


def run_file_name(run: RunPlay) -> str:
    """``full_agent_data_<YYYY_MM_DD_HH_MM_SS>.json``: a time drawn from the task id, plus the run."""
    digest = hashlib.blake2b(run.task.task_id.encode(), digest_size=8).digest()
    offset = int.from_bytes(digest, "big") % _SECONDS_PER_TASK_SLOT
    when = RUN_FILE_EPOCH + timedelta(seconds=offset + run.run_index)
    return f"full_agent_data_{when:%Y_%m_%d_%H_%M_%S}.json"


def run_file_path(out: str, run: RunPlay) -> str:
    """Where a run's file goes: one folder per task, so names never clash across tasks."""
    return join(out, _folder_name(run.task.task_id), run_file_name(run))


def _folder_name(task_id: str) -> str:
    safe = "".join(c if c.isalnum() or c in "-_." else "_" for c in task_id)
    return safe.strip(".") or "task"


def run_document(run: RunPlay, model_name: str) -> dict[str, Any]:
    """The run as the agent's v4 JSON document."""
    basic = [basic_env_figures(run.task.scenario)]
    snapshots = [[describe_scenario(run.task.scenario)]]  # what the getters would have printed
    history = [[dict(message), tag] for message, tag in run.prefix]
    block = [[dict(message), tag] for message, tag in run.strategy_block]
    copies = []
    for copy in run.copies:
        copies.append(
            {
                "chosen_strat": copy.strategy,
                "strats": list(run.strategies),
                "in_con_path": "/",
                "init_bs_env_info_history": basic,
                "init_sp_env_info_history": snapshots,
                "tagged_chat_history": [[dict(m), tag] for m, tag in copy.history],
                "prev_strats": [],
                "space_freed": _kib(copy.freed_bytes),
            }
        )
    main = {
        "chosen_strat": "",
        "strats": list(run.strategies),
        "in_con_path": "/",
        "init_bs_env_info_history": basic,
        "init_sp_env_info_history": snapshots,
        "tagged_chat_history": history + block + block,  # the agent appends its block twice
        "prev_strats": [],
        "space_freed": 0,
    }
    # The env agent's own reading of the container, taken at the run's start, differs from
    # run to run (as memory does); without it two runs that happen to write the same turns
    # would be byte-identical files, which the reader rightly takes for one file copied.
    env_basic = dict(basic[0], available_system_memory=_run_memory(run))
    env_history = [
        history[0],
        [
            {
                "role": "user",
                "content": basic_env_message(run.task.scenario, run.prompts, env_basic),
            },
            "get_basic_env_plist",
        ],
    ]
    env_agent = {
        "tagged_chat_history": env_history,
        "special_env_info_getter_codes": [],
        "basic_env_info_history": [env_basic],
        "special_env_info_history": snapshots,
        "model_name": model_name,
    }
    return {
        "main_strat_agent": main,
        "copy_strat_agents": copies,
        "env_agent": env_agent,
        "space_freed": sum(c["space_freed"] for c in copies),
    }


def write_run(out: str, run: RunPlay, model_name: str) -> str:
    """Write the run's file and its attempts' record atomically; return the run file's location.

    The record (``attempts/<task>/<run file stem>.jsonl`` beside ``runs/``) holds, per code
    attempt, its prompt, the reply, the outcome and bytes freed, and the scenario state it
    started from, so any attempt can be judged again with ``evaluate --completions``.
    """
    target = run_file_path(join(out, RUNS_FOLDER), run)
    record = join(out, ATTEMPTS_FOLDER, _folder_name(run.task.task_id), run_file_name(run))
    write_bytes_atomic(record.removesuffix(".json") + ".jsonl", attempts_jsonl(run))
    data = json.dumps(run_document(run, model_name), indent=2).encode()
    write_bytes_atomic(target, data)  # last: a run counts as written once its file exists
    return target


def attempts_jsonl(run: RunPlay) -> bytes:
    """One JSON line per code attempt of the run (see ``write_run``)."""
    lines = []
    for a in run.attempts:
        line = {
            "task_id": run.task.task_id,
            "run_index": run.run_index,
            "strategy": a.strategy,
            "attempt": a.number,
            "outcome": a.outcome.value,
            "freed_bytes": a.freed_bytes,
            "protected_damaged": list(a.damaged),
            "prompt": list(a.prompt),
            "reply": a.reply,
            "scenario": json.loads(scenario_to_json(a.state)),
        }
        lines.append(json.dumps(line, sort_keys=True) + "\n")
    return "".join(lines).encode()


def _kib(freed_bytes: int) -> float:
    """KiB, new free minus old free: positive when space was freed (the agent's unit since 2025-05)."""
    return round(freed_bytes / 1024, 3)


def _run_memory(run: RunPlay) -> float:
    """Available memory (MiB) the env agent read in this run: drawn from the run's key."""
    digest = hashlib.blake2b(run.run_id.encode(), digest_size=4).digest()
    return float(4000 + int.from_bytes(digest, "big") % 8000)
