"""A copy agent's tagged chat history: its entries, its code attempts, and its prompts' extent."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

from agir_retrain.tasks.errors import RunFileError
from agir_retrain.tasks.records import Attempt, Message, Outcome, QuarantineReason, Role
from agir_retrain.tasks.runs.fields import ReadLimits, json_type, preview
from agir_retrain.tasks.runs.text import (
    TAG_CODE_ATTEMPTS,
    TAG_STRATS_BLOCK,
    TAG_STRATS_REQUESTS,
    extract_code,
    parse_tag,
)

_ROLES = {role.value: role for role in Role}
_OUTCOMES = {outcome.value: outcome for outcome in Outcome}


@dataclass(slots=True)
class Entry:
    """One ``[message, tag]`` turn of a history, with its tag split into base and arguments."""

    message: Message
    tag: str
    base: str
    args: tuple[str, ...] = field(default_factory=tuple)


def parse_entry(source: str, run_id: str, position: int, item: Any, limits: ReadLimits) -> Entry:
    """Check and parse one history item.

    Raises:
        RunFileError: not a ``[message, tag]`` pair, a malformed message, or one over the limit.
    """
    if not (isinstance(item, list) and len(item) == 2 and isinstance(item[1], str)):
        raise RunFileError(
            source,
            QuarantineReason.BAD_HISTORY_ENTRY,
            f"history entry {position} is not a [message, tag] pair: {preview(item)}",
            run_id,
        )
    raw_message, tag = item
    if not isinstance(raw_message, dict):
        raise RunFileError(
            source,
            QuarantineReason.BAD_MESSAGE,
            f"history entry {position}: message is a JSON {json_type(raw_message)}",
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
            f"content of type {json_type(content)}",
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
    base, args = parse_tag(tag)
    return Entry(Message(role=role, content=content), tag, base, args)


def code_attempts(source: str, run_id: str, entries: list[Entry]) -> tuple[Attempt, ...]:
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


def turns_through(entries: list[Entry], bases: frozenset[str]) -> int:
    """How many turns lead up to and include the first turn of a kind; 0 if none."""
    return next((i + 1 for i, entry in enumerate(entries) if entry.base in bases), 0)


def drop_repeated_strategy_block(entries: list[Entry]) -> list[Entry]:
    """Return the history with a back-to-back repeat of the strategy block kept once.

    The main agent appends its whole strategy block (request, failed replies and
    regen prompts, final reply) twice; copy agents are taken between the two
    appends, but a history holding the block twice in a row must not teach it twice.
    Only an exact repeat of the whole block is dropped, never two turns that merely match.
    """
    start = turns_through(entries, TAG_STRATS_REQUESTS) - 1
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


def _same_turns(a: list[Entry], b: list[Entry]) -> bool:
    return all(x.tag == y.tag and x.message == y.message for x, y in zip(a, b, strict=True))
