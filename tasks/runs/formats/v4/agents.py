"""Read a v4 (or 2024-12) run file: one run per copy strategy agent.

The 2024-12 layout is v4's with other key and tag names and no per-agent
``space_freed``; both are read here, and ``legacy.py`` holds what only 2024-12 needs.
"""

from __future__ import annotations

import logging
import math
from dataclasses import dataclass
from pathlib import PurePosixPath
from typing import Any

from agir_retrain.tasks.errors import RunFileError
from agir_retrain.tasks.records import (
    Attempt,
    Message,
    Quarantined,
    QuarantineReason,
    Role,
    Run,
    UnitConvention,
)
from agir_retrain.tasks.run_ids import make_run_id
from agir_retrain.tasks.runs.fields import (
    ReadLimits,
    RunFileResult,
    json_type,
    optional,
    optional_number,
    require,
    require_finite_bytes,
)
from agir_retrain.tasks.runs.formats.v4.history import (
    Entry,
    code_attempts,
    drop_repeated_strategy_block,
    parse_entry,
    turns_through,
)
from agir_retrain.tasks.runs.formats.v4.legacy import attribute_legacy_total
from agir_retrain.tasks.runs.scoring import classify_run, normalise_space_freed
from agir_retrain.tasks.runs.text import TAG_CODE_REQUEST, TAG_STRATS_REQUESTS

log = logging.getLogger(__name__)

V4 = "v4"  # the formats' names: Run.file_schema of their runs
LEGACY_2024_12 = "legacy_2024_12"
AGENTS_KEY = {V4: "copy_strat_agents", LEGACY_2024_12: "strat_agents"}


@dataclass(slots=True, kw_only=True)
class ParsedAgent:
    """A copy agent checked and parsed, before its run is built."""

    run_id: str
    index: int
    strategy: str
    entries: list[Entry]
    attempts: tuple[Attempt, ...]
    space_freed_raw: float | None


def read_agents_document(
    source: str,
    size: int,
    document: dict[str, Any],
    file_schema: str,
    limits: ReadLimits,
    digest: str,
) -> RunFileResult:
    """Read a parsed v4 or 2024-12 document into runs; a bad copy agent is quarantined alone.

    Runs are named ``make_run_id(<file stem>, <copy index>, digest)``, ``digest`` being
    the ``content_digest`` of the file's bytes.

    Raises:
        RunFileError: the file as a whole is malformed (its env agent or agent list).
    """
    env_agent = require(source, document, "env_agent", dict, "top level")
    model_name = optional(source, env_agent, "model_name", str, "env_agent")
    # Files that record model_name (2025-05-20 on) measure KiB as new - old; older: MB, old - new.
    convention = (
        UnitConvention.KIB_NEW_MINUS_OLD
        if "model_name" in env_agent
        else UnitConvention.MIB_OLD_MINUS_NEW
    )
    getter_codes = optional(source, env_agent, "special_env_info_getter_codes", list, "env_agent")
    env_getter_prompt = _env_getter_prompt(source, getter_codes or [])
    if file_schema == V4:
        require(source, document, "main_strat_agent", dict, "top level")
    agents = require(source, document, AGENTS_KEY[file_schema], list, "top level")
    # Only 2024-12 files need the file total; in v4 it is the sum over copy agents.
    file_space_freed = _legacy_total(source, document) if file_schema == LEGACY_2024_12 else None

    stem = PurePosixPath(source).stem
    parsed: list[ParsedAgent] = []
    quarantined: dict[int, Quarantined] = {}  # by copy index, so they list in file order
    for index, agent in enumerate(agents):
        run_id = make_run_id(stem, index, digest)
        try:
            parsed.append(_parse_copy_agent(source, run_id, index, agent, file_schema, limits))
        except RunFileError as error:
            quarantined[index] = Quarantined(
                source=source, run_id=run_id, reason=error.reason, detail=error.detail
            )
    if file_schema == LEGACY_2024_12:
        attribute_legacy_total(parsed, file_space_freed)
    runs: list[Run] = []
    for agent in parsed:
        try:
            runs.append(
                _build_run(source, agent, file_schema, model_name, convention, env_getter_prompt)
            )
        except RunFileError as error:
            quarantined[agent.index] = Quarantined(
                source=source, run_id=agent.run_id, reason=error.reason, detail=error.detail
            )
    if quarantined:
        log.debug("%s: %d of %d runs quarantined", source, len(quarantined), len(agents))
    return RunFileResult(
        source=source,
        size_bytes=size,
        runs=tuple(runs),
        quarantined=tuple(quarantined[index] for index in sorted(quarantined)),
        runs_found=len(agents),
        file_format=file_schema,
    )


def _parse_copy_agent(
    source: str, run_id: str, index: int, agent: Any, file_schema: str, limits: ReadLimits
) -> ParsedAgent:
    where = f"copy agent {index}"
    if not isinstance(agent, dict):
        raise RunFileError(
            source,
            QuarantineReason.WRONG_TYPE,
            f"{where} is a JSON {json_type(agent)}, expected an object",
            run_id,
        )
    strategy = require(source, agent, "chosen_strat", str, where, run_id)
    history = require(source, agent, "tagged_chat_history", list, where, run_id)
    entries = [parse_entry(source, run_id, i, item, limits) for i, item in enumerate(history)]
    space_freed_raw = None
    if file_schema == V4:
        space_freed_raw = optional_number(source, agent, "space_freed", where, run_id)
        if space_freed_raw is None:
            raise RunFileError(
                source, QuarantineReason.MISSING_KEY, f"{where}: no 'space_freed'", run_id
            )
    attempts = code_attempts(source, run_id, entries)
    return ParsedAgent(
        run_id=run_id,
        index=index,
        strategy=strategy,
        entries=entries,
        attempts=attempts,
        space_freed_raw=space_freed_raw,
    )


def _build_run(
    source: str,
    agent: ParsedAgent,
    file_schema: str,
    model_name: str | None,
    convention: UnitConvention,
    env_getter_prompt: tuple[Message, ...],
) -> Run:
    entries = drop_repeated_strategy_block(agent.entries)
    strategy_turns = turns_through(entries, TAG_STRATS_REQUESTS)
    code_turns = turns_through(entries, frozenset({TAG_CODE_REQUEST}))
    conversation = tuple(entry.message for entry in entries[: max(strategy_turns, code_turns)])
    space_freed_bytes = require_finite_bytes(
        source,
        normalise_space_freed(agent.space_freed_raw, convention),
        agent.space_freed_raw,
        f"copy agent {agent.index}",
        agent.run_id,
    )
    verdict = classify_run(
        attempts=agent.attempts,
        space_freed_bytes=space_freed_bytes,
        space_freed_known=agent.space_freed_raw is not None,
        strategy=agent.strategy,
        has_strategy_prompt=strategy_turns > 0,
        has_code_prompt=code_turns > 0,
    )
    return Run(
        run_id=agent.run_id,
        source=source,
        copy_index=agent.index,
        file_schema=file_schema,
        model_name=model_name,
        strategy=agent.strategy,
        conversation=conversation,
        strategy_turns=strategy_turns,
        code_turns=code_turns,
        env_getter_prompt=env_getter_prompt,
        attempts=agent.attempts,
        space_freed_raw=agent.space_freed_raw,
        space_freed_bytes=space_freed_bytes,
        unit_convention=convention,
        run_class=verdict.run_class,
        class_reason=verdict.reason,
        class_detail=verdict.detail,
    )


def _legacy_total(source: str, document: dict[str, Any]) -> float | None:
    """The 2024-12 file total; one past float range stays infinite, to quarantine its run.

    Only the run the total is attributed to depends on it, so the file is not rejected.
    """
    try:
        return optional_number(source, document, "space_freed", "top level")
    except RunFileError as error:
        if error.reason is not QuarantineReason.NON_FINITE_NUMBER:
            raise
        return math.inf


def _env_getter_prompt(source: str, codes: list[Any]) -> tuple[Message, ...]:
    if not all(isinstance(code, str) for code in codes):
        raise RunFileError(
            source,
            QuarantineReason.WRONG_TYPE,
            "env_agent.special_env_info_getter_codes must be a list of strings",
        )
    if not codes:
        return ()
    return (Message(role=Role.USER, content="\n\n".join(codes)),)
