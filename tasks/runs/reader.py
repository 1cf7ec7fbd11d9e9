"""Read AGIR run files into ``Run`` records; quarantine what cannot be read, with a reason.

``read_run_file`` never raises on bad input: a file that cannot be parsed is one
``Quarantined`` entry, a malformed copy agent is another, and the file's valid runs
are kept. See ``docs/run-format.md`` for the format and its quirks.
"""

from __future__ import annotations

import functools
import json
import logging
import math
import re
from dataclasses import dataclass, field
from pathlib import PurePosixPath
from typing import Any

import orjson

from agir_retrain.tasks.errors import RunFileError
from agir_retrain.tasks.io import read_bytes
from agir_retrain.tasks.records import (
    Attempt,
    FileSchema,
    Message,
    Outcome,
    Quarantined,
    QuarantineReason,
    Role,
    Run,
    UnitConvention,
)
from agir_retrain.tasks.runs.scoring import classify_run, normalise_space_freed

log = logging.getLogger(__name__)

# Tag base names. A tag may carry a model suffix, `get_strats_req_plist(qwen)` (v4) or
# `get_special_egc_req_plist,qwen` (older), and an outcome, `genned_strat_code(success)`.
# 2024-12 files name the same turns `get_strat_req_plist`, `gen_strats`, `strat_codegen(...)`.
TAG_STRATS_REQUESTS = frozenset({"get_strats_req_plist", "get_strat_req_plist"})
TAG_STRATS_BLOCK = TAG_STRATS_REQUESTS | {"genned_strats", "gen_strats", "get_strat_regen_plist"}
TAG_CODE_REQUEST = "get_strat_code_req_plist"
TAG_CODE_ATTEMPTS = frozenset({"genned_strat_code", "strat_codegen"})

_ROLES = {role.value: role for role in Role}
_OUTCOMES = {outcome.value: outcome for outcome in Outcome}
_TAG_BASE = re.compile(r"[^(,]*")
_TAG_ARGS = re.compile(r"\(([^()]*)\)")
_CODE_FENCE = re.compile(r"```[ \t]*(?:python3?|py)?[ \t]*\r?\n(.*?)```", re.DOTALL | re.IGNORECASE)
_LONE_SURROGATE = re.compile("[\ud800-\udfff]")
_V5_KEYS = frozenset({"run_id", "raw_response", "current_attempt", "max_attempts"})


@dataclass(frozen=True, slots=True, kw_only=True)
class ReadLimits:
    """Bounds that keep one bad file from taking the machine down."""

    max_file_bytes: int = 512 << 20
    max_message_chars: int = 4 << 20


@dataclass(frozen=True, slots=True, kw_only=True)
class RunFileResult:
    """What one run file gave: its runs, and what of it was quarantined."""

    source: str
    size_bytes: int
    runs: tuple[Run, ...] = ()
    quarantined: tuple[Quarantined, ...] = ()
    runs_found: int = 0  # copy agents seen, read or quarantined
    file_quarantined: bool = False


@dataclass(slots=True)
class _Entry:
    message: Message
    tag: str
    base: str
    args: tuple[str, ...] = field(default_factory=tuple)


def read_run_file(
    source: str, data: bytes | None = None, limits: ReadLimits | None = None
) -> RunFileResult:
    """Read one run file (local path or URL) into runs; never raises on bad content.

    Args:
        source: the file's path or URL; it names the runs (``<stem>#<index>``).
        data: the file's bytes, when the caller already holds them.
        limits: size bounds; a file or message over them is quarantined.
    """
    limits = limits or ReadLimits()
    try:
        if data is None:
            data = read_bytes(source)
        if len(data) > limits.max_file_bytes:
            raise RunFileError(
                source,
                QuarantineReason.FILE_TOO_LARGE,
                f"{len(data)} bytes > max_file_bytes={limits.max_file_bytes}",
            )
        document = parse_json(source, data)
        return _read_document(source, len(data), document, limits)
    except RunFileError as error:
        return _quarantined_file(source, len(data or b""), error)
    except OSError as error:
        return _quarantined_file(
            source, 0, RunFileError(source, QuarantineReason.READ_ERROR, str(error))
        )


def _quarantined_file(source: str, size: int, error: RunFileError) -> RunFileResult:
    entry = Quarantined(source=source, run_id=None, reason=error.reason, detail=error.detail)
    return RunFileResult(
        source=source, size_bytes=size, quarantined=(entry,), file_quarantined=True
    )


def parse_json(source: str, data: bytes) -> Any:
    """Parse JSON bytes with orjson, falling back to the standard library where it must.

    orjson rejects ``NaN``/``Infinity`` and lone surrogate escapes (``"\\ud800"``),
    both of which Python's ``json.dump`` writes; those files are parsed again by
    ``json.loads``, and lone surrogates become U+FFFD.

    Raises:
        RunFileError: empty, not UTF-8, truncated or otherwise invalid JSON.
    """
    if not data.strip():
        raise RunFileError(source, QuarantineReason.EMPTY_FILE, f"{len(data)} bytes, no content")
    try:
        return orjson.loads(data)
    except orjson.JSONDecodeError:
        pass
    try:
        text = data.decode("utf-8")
    except UnicodeDecodeError as error:
        raise RunFileError(
            source,
            QuarantineReason.NOT_UTF8,
            f"byte 0x{data[error.start]:02x} at offset {error.start} is not valid UTF-8",
        ) from error
    try:
        document = json.loads(text)
    except json.JSONDecodeError as error:
        end = len(text.rstrip())
        truncated = error.pos >= end or error.msg.startswith("Unterminated string")
        reason = QuarantineReason.TRUNCATED_JSON if truncated else QuarantineReason.INVALID_JSON
        raise RunFileError(
            source, reason, f"{error.msg} at line {error.lineno} column {error.colno}"
        ) from error
    except RecursionError as error:
        raise RunFileError(source, QuarantineReason.INVALID_JSON, "nested too deeply") from error
    return _replace_lone_surrogates(document)


def _replace_lone_surrogates(value: Any) -> Any:
    if isinstance(value, str):
        return _LONE_SURROGATE.sub("\ufffd", value)
    if isinstance(value, list):
        return [_replace_lone_surrogates(item) for item in value]
    if isinstance(value, dict):
        return {
            _replace_lone_surrogates(key): _replace_lone_surrogates(item)
            for key, item in value.items()
        }
    return value


def _read_document(source: str, size: int, document: Any, limits: ReadLimits) -> RunFileResult:
    if not isinstance(document, dict):
        raise RunFileError(
            source,
            QuarantineReason.NOT_AN_OBJECT,
            f"top level is a JSON {_json_type(document)}, expected an object",
        )
    if "copy_strat_agents" in document or "main_strat_agent" in document:
        file_schema, agents_key = FileSchema.V4, "copy_strat_agents"
    elif "strat_agents" in document:
        file_schema, agents_key = FileSchema.LEGACY_2024_12, "strat_agents"
    elif _V5_KEYS <= document.keys():
        raise RunFileError(
            source,
            QuarantineReason.V5_ATTEMPT_FILE,
            "a v5 per-attempt file (one code attempt, no strategy prompt); not read as a run",
        )
    else:
        keys = ", ".join(sorted(map(str, document))[:8])
        raise RunFileError(
            source, QuarantineReason.UNKNOWN_SCHEMA, f"not an AGIR run file; keys: {keys}"
        )

    env_agent = _require(source, document, "env_agent", dict, "top level")
    model_name = _optional(source, env_agent, "model_name", str, "env_agent")
    # Files that record model_name (2025-05-20 on) measure KiB as new - old; older: MB, old - new.
    convention = (
        UnitConvention.KIB_NEW_MINUS_OLD
        if "model_name" in env_agent
        else UnitConvention.MIB_OLD_MINUS_NEW
    )
    getter_codes = _optional(source, env_agent, "special_env_info_getter_codes", list, "env_agent")
    env_getter_prompt = _env_getter_prompt(source, getter_codes or [])
    if file_schema is FileSchema.V4:
        _require(source, document, "main_strat_agent", dict, "top level")
    agents = _require(source, document, agents_key, list, "top level")
    # Only 2024-12 files need the file total; in v4 it is the sum over copy agents.
    file_space_freed = (
        _optional_number(source, document, "space_freed", "top level")
        if file_schema is FileSchema.LEGACY_2024_12
        else None
    )

    stem = PurePosixPath(source).stem
    parsed: list[_ParsedAgent] = []
    quarantined: list[Quarantined] = []
    for index, agent in enumerate(agents):
        run_id = f"{stem}#{index}"
        try:
            parsed.append(_parse_copy_agent(source, run_id, index, agent, file_schema, limits))
        except RunFileError as error:
            quarantined.append(
                Quarantined(source=source, run_id=run_id, reason=error.reason, detail=error.detail)
            )
    if file_schema is FileSchema.LEGACY_2024_12:
        _attribute_legacy_total(parsed, file_space_freed)
    runs = tuple(
        _build_run(source, agent, file_schema, model_name, convention, env_getter_prompt)
        for agent in parsed
    )
    if quarantined:
        log.debug("%s: %d of %d runs quarantined", source, len(quarantined), len(agents))
    return RunFileResult(
        source=source,
        size_bytes=size,
        runs=runs,
        quarantined=tuple(quarantined),
        runs_found=len(agents),
    )


@dataclass(slots=True, kw_only=True)
class _ParsedAgent:
    run_id: str
    index: int
    strategy: str
    entries: list[_Entry]
    attempts: tuple[Attempt, ...]
    space_freed_raw: float | None


def _parse_copy_agent(
    source: str, run_id: str, index: int, agent: Any, file_schema: FileSchema, limits: ReadLimits
) -> _ParsedAgent:
    where = f"copy agent {index}"
    if not isinstance(agent, dict):
        raise RunFileError(
            source,
            QuarantineReason.WRONG_TYPE,
            f"{where} is a JSON {_json_type(agent)}, expected an object",
            run_id,
        )
    strategy = _require(source, agent, "chosen_strat", str, where, run_id)
    history = _require(source, agent, "tagged_chat_history", list, where, run_id)
    entries = [_parse_entry(source, run_id, i, item, limits) for i, item in enumerate(history)]
    space_freed_raw = None
    if file_schema is FileSchema.V4:
        space_freed_raw = _optional_number(source, agent, "space_freed", where, run_id)
        if space_freed_raw is None:
            raise RunFileError(
                source, QuarantineReason.MISSING_KEY, f"{where}: no 'space_freed'", run_id
            )
    attempts = _attempts(source, run_id, entries)
    return _ParsedAgent(
        run_id=run_id,
        index=index,
        strategy=strategy,
        entries=entries,
        attempts=attempts,
        space_freed_raw=space_freed_raw,
    )


def _attribute_legacy_total(agents: list[_ParsedAgent], file_total: float | None) -> None:
    """Give 2024-12 runs a figure from the file total where that is exact.

    Those files record only the sum over copies, and only copies whose code ran in
    the real container add to it (the others add 0). So runs that never ran code get
    0, and when exactly one run ran code the whole total is its own. When several
    did, their shares are unknown (``None``), which ``classify_run`` reports.
    """
    ran = [agent for agent in agents if any(a.outcome.ran for a in agent.attempts)]
    for agent in agents:
        if agent not in ran:
            agent.space_freed_raw = 0.0
        elif len(ran) == 1:
            agent.space_freed_raw = file_total
        else:
            agent.space_freed_raw = None


def _build_run(
    source: str,
    agent: _ParsedAgent,
    file_schema: FileSchema,
    model_name: str | None,
    convention: UnitConvention,
    env_getter_prompt: tuple[Message, ...],
) -> Run:
    entries = _drop_repeated_strategy_block(agent.entries)
    strategy_turns = _turns_through(entries, TAG_STRATS_REQUESTS)
    code_turns = _turns_through(entries, frozenset({TAG_CODE_REQUEST}))
    conversation = tuple(entry.message for entry in entries[: max(strategy_turns, code_turns)])
    space_freed_bytes = normalise_space_freed(agent.space_freed_raw, convention)
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


def _parse_entry(source: str, run_id: str, position: int, item: Any, limits: ReadLimits) -> _Entry:
    if not (isinstance(item, list) and len(item) == 2 and isinstance(item[1], str)):
        raise RunFileError(
            source,
            QuarantineReason.BAD_HISTORY_ENTRY,
            f"history entry {position} is not a [message, tag] pair: {_preview(item)}",
            run_id,
        )
    raw_message, tag = item
    if not isinstance(raw_message, dict):
        raise RunFileError(
            source,
            QuarantineReason.BAD_MESSAGE,
            f"history entry {position}: message is a JSON {_json_type(raw_message)}",
            run_id,
        )
    role = _ROLES.get(raw_message.get("role"))  # type: ignore[arg-type]
    content = raw_message.get("content")
    if role is None or not isinstance(content, str):
        raise RunFileError(
            source,
            QuarantineReason.BAD_MESSAGE,
            f"history entry {position} ({tag}): needs role in system/user/assistant and "
            f"string content, got role={raw_message.get('role')!r}, "
            f"content of type {_json_type(content)}",
            run_id,
        )
    if len(content) > limits.max_message_chars:
        raise RunFileError(
            source,
            QuarantineReason.MESSAGE_TOO_LARGE,
            f"history entry {position} ({tag}): {len(content)} characters > "
            f"max_message_chars={limits.max_message_chars}",
            run_id,
        )
    base, args = _parse_tag(tag)
    return _Entry(Message(role=role, content=content), tag, base, args)


@functools.lru_cache(maxsize=4096)
def _parse_tag(tag: str) -> tuple[str, tuple[str, ...]]:
    """Split a tag into its base name and its parenthesised arguments (tags repeat: cached)."""
    base = _TAG_BASE.match(tag).group(0).strip()  # type: ignore[union-attr]
    return base, tuple(arg.strip() for arg in _TAG_ARGS.findall(tag))


def _attempts(source: str, run_id: str, entries: list[_Entry]) -> tuple[Attempt, ...]:
    """The run's code attempts, in order, each with its outcome and fenced code."""
    attempts: list[Attempt] = []
    for entry in entries:
        if entry.base not in TAG_CODE_ATTEMPTS:
            continue
        outcomes = [_OUTCOMES[arg] for arg in entry.args if arg in _OUTCOMES]
        if len(outcomes) != 1:
            raise RunFileError(
                source,
                QuarantineReason.UNKNOWN_OUTCOME,
                f"code attempt tag {entry.tag!r} names no single known outcome "
                f"({', '.join(_OUTCOMES)})",
                run_id,
            )
        attempts.append(
            Attempt(
                index=len(attempts),
                outcome=outcomes[0],
                message=entry.message.content,
                code=extract_code(entry.message.content),
            )
        )
    return tuple(attempts)


def extract_code(message: str) -> str | None:
    """Return the text inside the first ```python fence of a message, or None."""
    match = _CODE_FENCE.search(message)
    return match.group(1) if match else None


def _turns_through(entries: list[_Entry], bases: frozenset[str]) -> int:
    """How many turns lead up to and include the first turn of a kind; 0 if none."""
    return next((i + 1 for i, entry in enumerate(entries) if entry.base in bases), 0)


def _drop_repeated_strategy_block(entries: list[_Entry]) -> list[_Entry]:
    """Return the history with a back-to-back repeat of the strategy block kept once.

    The main agent appends its whole strategy block (request, failed replies and
    regen prompts, final reply) twice; copy agents are taken between the two
    appends, but a history holding the block twice in a row must not teach it twice.
    Only an exact repeat of the whole block is dropped, never two turns that merely match.
    """
    start = _turns_through(entries, TAG_STRATS_REQUESTS) - 1
    if start < 0:
        return entries
    end = start
    while end < len(entries) and entries[end].base in TAG_STRATS_BLOCK:
        end += 1
    half = (end - start) // 2
    if (
        (end - start) % 2 == 0
        and half
        and _same_turns(entries[start : start + half], entries[start + half : end])
    ):
        return entries[: start + half] + entries[end:]
    return entries


def _same_turns(a: list[_Entry], b: list[_Entry]) -> bool:
    return all(x.tag == y.tag and x.message == y.message for x, y in zip(a, b, strict=True))


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


def _require(
    source: str, obj: dict, key: str, kind: type, where: str, run_id: str | None = None
) -> Any:
    if key not in obj:
        raise RunFileError(source, QuarantineReason.MISSING_KEY, f"{where}: no {key!r}", run_id)
    value = obj[key]
    if not isinstance(value, kind):
        raise RunFileError(
            source,
            QuarantineReason.WRONG_TYPE,
            f"{where}: {key!r} is a JSON {_json_type(value)}, expected {_KIND_NAMES[kind]}",
            run_id,
        )
    return value


def _optional(
    source: str, obj: dict, key: str, kind: type, where: str, run_id: str | None = None
) -> Any:
    if obj.get(key) is None:
        return None
    return _require(source, obj, key, kind, where, run_id)


def _optional_number(
    source: str, obj: dict, key: str, where: str, run_id: str | None = None
) -> float | None:
    value = obj.get(key)
    if value is None:
        return None
    if isinstance(value, bool) or not isinstance(value, int | float):
        raise RunFileError(
            source,
            QuarantineReason.WRONG_TYPE,
            f"{where}: {key!r} is a JSON {_json_type(value)}, expected a number",
            run_id,
        )
    if not math.isfinite(value):
        raise RunFileError(
            source, QuarantineReason.NON_FINITE_NUMBER, f"{where}: {key!r} is {value}", run_id
        )
    return float(value)


_KIND_NAMES = {dict: "an object", list: "an array", str: "a string"}


def _json_type(value: Any) -> str:
    if value is None:
        return "null"
    if isinstance(value, bool):
        return "boolean"
    if isinstance(value, int | float):
        return "number"
    if isinstance(value, str):
        return "string"
    if isinstance(value, list):
        return "array"
    return "object"


def _preview(value: Any, limit: int = 80) -> str:
    text = repr(value)
    return text if len(text) <= limit else text[: limit - 3] + "..."
