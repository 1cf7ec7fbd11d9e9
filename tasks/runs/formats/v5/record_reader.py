"""Read one v5 attempt record (branch v5, one JSON object per file) into a ``V5Record``.

A v5 file is recognised by its keys, never its name, and validated as strictly as a
v4 file: every key of its type must be present (unset ones are ``null``), of the
right type, with finite numbers; anything else quarantines the file with a reason.
Chains are formed later, from the records of every shard (``chains.py``).
See ``docs/run-format.md`` ("v5 records").
"""

from __future__ import annotations

import hashlib
from typing import Any

from agir_retrain.tasks.errors import RunFileError
from agir_retrain.tasks.records import (
    Message,
    Outcome,
    QuarantineReason,
    Role,
    UnitConvention,
)
from agir_retrain.tasks.runs.fields import (
    ReadLimits,
    json_type,
    optional_number,
    require_finite_bytes,
)
from agir_retrain.tasks.runs.formats.v5.schema import V5Record, V5RecordType
from agir_retrain.tasks.runs.scoring import normalise_space_freed
from agir_retrain.tasks.runs.text import extract_code

COMMON_KEYS = ("run_id", "version", "prompt", "raw_response", "current_attempt", "max_attempts")
# Every key each type's writer puts in a record (the upstream TypedDicts, in their order).
TYPE_KEYS: dict[V5RecordType, tuple[str, ...]] = {
    V5RecordType.ENV_GETTER_CODE: (
        *COMMON_KEYS,
        "extract_result_if_ok", "extract_result_if_err", "validation_result_if_err",
        "run_result_if_ok", "run_result_if_ok_hash", "run_result_if_err", "run_result_if_empty",
    ),
    V5RecordType.STRATEGY_LIST: (
        *COMMON_KEYS,
        "special_env_info_hashes", "extract_result_if_ok", "extract_result_if_ok_hash",
        "extract_result_if_err",
    ),
    V5RecordType.STRATEGY_CODE: (
        *COMMON_KEYS,
        "special_env_info_hashes", "strategies_hash", "strategy", "extract_result_if_err",
        "extract_result_if_ok", "validation_result_if_err", "run_result_if_ok",
        "run_result_if_ok_hash", "run_result_if_err", "this_code_space_change_kb",
    ),
}  # fmt: skip
# Keys that only one type has: they tell the type of a record missing some other key.
_DISTINCTIVE: dict[V5RecordType, frozenset[str]] = {
    V5RecordType.ENV_GETTER_CODE: frozenset({"run_result_if_empty"}),
    V5RecordType.STRATEGY_LIST: frozenset({"extract_result_if_ok_hash"}),
    V5RecordType.STRATEGY_CODE: frozenset(
        {"strategies_hash", "strategy", "this_code_space_change_kb"}
    ),
}
_KEY_SETS = {frozenset(keys): kind for kind, keys in TYPE_KEYS.items()}
_ROLES = {role.value: role for role in Role}
_OPTIONAL_STRINGS = (
    "extract_result_if_err", "validation_result_if_err", "run_result_if_ok",
    "run_result_if_ok_hash", "run_result_if_err", "run_result_if_empty",
    "extract_result_if_ok_hash",
)  # fmt: skip


def looks_like_v5(document: dict[str, Any]) -> bool:
    """Tell whether an object is a v5 attempt record: it has most of the keys every type has.

    Four of six, so that a record missing a key or two is still read as v5 and
    quarantined for what it lacks (``missing_key``), not as an unknown format.
    """
    return sum(key in document for key in COMMON_KEYS) >= 4


def group_hash(version: str, agent_run_id: str) -> int:
    """A u64 naming one agent run: every record it wrote shares it, whatever its type."""
    digest = hashlib.blake2b(f"{version}\x1f{agent_run_id}".encode(), digest_size=8).digest()
    return int.from_bytes(digest, "big")


def strategies_hash(strategies: tuple[str, ...]) -> str:
    """The agent's hash of a strategy list: sha256 of the strategies joined with commas."""
    return hashlib.sha256(",".join(strategies).encode()).hexdigest()


def record_type(source: str, document: dict[str, Any]) -> V5RecordType:
    """Tell a v5 record's type from its keys.

    Raises:
        RunFileError: no distinctive key, or those of more than one type (``unknown_schema``).
    """
    exact = _KEY_SETS.get(frozenset(document))
    if exact is not None:  # the writer always writes every key of the type: the usual case
        return exact
    keys = document.keys()
    scores = {kind: len(marks & keys) for kind, marks in _DISTINCTIVE.items()}
    best = max(scores.values())
    winners = [kind for kind, score in scores.items() if score == best]
    if best == 0 or len(winners) > 1:
        raise RunFileError(
            source,
            QuarantineReason.UNKNOWN_SCHEMA,
            "a v5 record of no single type (looked for "
            + "; ".join(f"{k.value}: {', '.join(sorted(m))}" for k, m in _DISTINCTIVE.items())
            + ")",
        )
    return winners[0]


def read_v5_record(source: str, document: dict[str, Any], limits: ReadLimits) -> V5Record:
    """Check one v5 record against its type's keys and types, and keep what chains need.

    Raises:
        RunFileError: a key missing, of the wrong type, a bad number or message, or no outcome.
    """
    kind = record_type(source, document)
    where = f"v5 {kind.value} record"
    missing = [key for key in TYPE_KEYS[kind] if key not in document]
    if missing:
        raise RunFileError(
            source, QuarantineReason.MISSING_KEY, f"{where}: no {', '.join(map(repr, missing))}"
        )
    field = _Fields(source, document, where)
    agent_run_id = field.string("run_id")
    version = field.string("version")
    attempt = field.attempt_number("current_attempt")
    max_attempts = field.attempt_number("max_attempts")
    prompt = _messages(source, document["prompt"], where, limits)
    raw_response = field.string("raw_response")
    if len(raw_response) > limits.max_message_chars:
        raise RunFileError(
            source,
            QuarantineReason.MESSAGE_TOO_LARGE,
            f"{where}: raw_response has {len(raw_response)} characters > "
            f"max_message_chars={limits.max_message_chars}",
        )
    for key in _OPTIONAL_STRINGS:
        if key in TYPE_KEYS[kind]:
            field.optional_string(key)
    hashes = (
        () if kind is V5RecordType.ENV_GETTER_CODE else field.strings("special_env_info_hashes")
    )
    strategy = code = chain_hash = None
    strategies: tuple[str, ...] = ()
    space = None
    if kind is V5RecordType.STRATEGY_LIST:
        listed = field.optional_strings("extract_result_if_ok")
        strategies = listed or ()
        result_hash = field.optional_string("extract_result_if_ok_hash")
        if listed is not None and result_hash is None:
            result_hash = strategies_hash(strategies)
        outcome = _list_outcome(source, document, where, listed)
    else:
        extracted = field.optional_string("extract_result_if_ok")
        code = extracted if extracted is not None else extract_code(raw_response)
        result_hash = field.optional_string("run_result_if_ok_hash")
        if kind is V5RecordType.STRATEGY_CODE:
            strategy = field.string("strategy")
            chain_hash = field.string("strategies_hash")
            space = optional_number(source, document, "this_code_space_change_kb", where)
            if space is not None:  # finite in KiB is not always finite in bytes (1e308 KiB)
                require_finite_bytes(
                    source,
                    normalise_space_freed(space, UnitConvention.KIB_FREED_V5),
                    space,
                    where,
                    run_id=None,  # a v5 file is one record: the file is quarantined
                )
        outcome = _code_outcome(source, document, where, kind, space)
    return V5Record(
        group_hash=group_hash(version, agent_run_id),
        source=source,
        record_type=kind,
        version=version,
        agent_run_id=agent_run_id,
        current_attempt=attempt,
        max_attempts=max_attempts,
        prompt=prompt,
        raw_response=raw_response,
        outcome=outcome,
        code=code,
        strategy=strategy,
        strategies_hash=chain_hash,
        special_env_info_hashes=hashes,
        strategies=strategies,
        result_hash=result_hash,
        space_change_kib=space,
    )


def _code_outcome(
    source: str, document: dict[str, Any], where: str, kind: V5RecordType, space: float | None
) -> Outcome:
    """The spec's outcome of a code attempt: the first stage that recorded a result."""
    if document["extract_result_if_err"] is not None:
        return Outcome.EXTRACT_FAIL
    if document["validation_result_if_err"] is not None:
        return Outcome.VALIDATION_FAIL
    if document["run_result_if_err"] is not None:
        return Outcome.RUN_FAIL
    if kind is V5RecordType.ENV_GETTER_CODE:
        if document["run_result_if_empty"] is not None:
            return Outcome.RUN_FAIL  # ran, printed nothing: the agent retries it as a failure
        if document["run_result_if_ok"] is not None:
            return Outcome.SUCCESS
    elif document["run_result_if_ok"] is not None:  # "" counts: the code ran and printed nothing
        return Outcome.SUCCESS if space is not None and space > 0 else Outcome.DELETION_FAIL
    raise RunFileError(
        source,
        QuarantineReason.UNKNOWN_OUTCOME,
        f"{where}: none of extract_result_if_err, validation_result_if_err, run_result_if_err, "
        "run_result_if_ok is set",
    )


def _list_outcome(
    source: str, document: dict[str, Any], where: str, listed: tuple[str, ...] | None
) -> Outcome:
    if listed is not None:
        return Outcome.SUCCESS
    if document["extract_result_if_err"] is not None:
        return Outcome.EXTRACT_FAIL
    raise RunFileError(
        source,
        QuarantineReason.UNKNOWN_OUTCOME,
        f"{where}: neither extract_result_if_ok nor extract_result_if_err is set",
    )


class _Fields:
    """Typed access to one record's keys, each error naming the file, record type and key."""

    __slots__ = ("document", "source", "where")

    def __init__(self, source: str, document: dict[str, Any], where: str) -> None:
        self.source, self.document, self.where = source, document, where

    def _wrong(self, key: str, expected: str) -> RunFileError:
        value = self.document[key]
        return RunFileError(
            self.source,
            QuarantineReason.WRONG_TYPE,
            f"{self.where}: {key!r} is a JSON {json_type(value)}, expected {expected}",
        )

    def string(self, key: str) -> str:
        value = self.document[key]
        if not isinstance(value, str):
            raise self._wrong(key, "a string")
        return value

    def optional_string(self, key: str) -> str | None:
        value = self.document[key]
        if value is not None and not isinstance(value, str):
            raise self._wrong(key, "a string or null")
        return value

    def strings(self, key: str) -> tuple[str, ...]:
        value = self.optional_strings(key)
        if value is None:
            raise self._wrong(key, "an array of strings")
        return value

    def optional_strings(self, key: str) -> tuple[str, ...] | None:
        value = self.document[key]
        if value is None:
            return None
        if not isinstance(value, list) or not all(isinstance(item, str) for item in value):
            raise self._wrong(key, "an array of strings")
        return tuple(value)

    def attempt_number(self, key: str) -> int:
        value = self.document[key]
        if isinstance(value, bool) or not isinstance(value, int):
            raise self._wrong(key, "an integer")
        if value < 1:
            raise RunFileError(
                self.source,
                QuarantineReason.BAD_ATTEMPT_NUMBER,
                f"{self.where}: {key!r} is {value}; attempts are numbered from 1",
            )
        return value


def _messages(source: str, value: Any, where: str, limits: ReadLimits) -> tuple[Message, ...]:
    if not isinstance(value, list):
        raise RunFileError(
            source,
            QuarantineReason.WRONG_TYPE,
            f"{where}: 'prompt' is a JSON {json_type(value)}, expected an array of messages",
        )
    messages = []
    for position, item in enumerate(value):
        role = _ROLES.get(item.get("role")) if isinstance(item, dict) else None
        content = item.get("content") if isinstance(item, dict) else None
        if role is None or not isinstance(content, str):
            raise RunFileError(
                source,
                QuarantineReason.BAD_MESSAGE,
                f"{where}: prompt message {position} needs role in system/user/assistant and "
                f"string content, got a JSON {json_type(item)}",
            )
        if len(content) > limits.max_message_chars:
            raise RunFileError(
                source,
                QuarantineReason.MESSAGE_TOO_LARGE,
                f"{where}: prompt message {position} has {len(content)} characters > "
                f"max_message_chars={limits.max_message_chars}",
            )
        messages.append(Message(role=role, content=content))
    return tuple(messages)
