"""The record type of each stage, with its polars schema right beside it.

A run file becomes ``Run`` records (one per copy strategy agent); a run becomes
``ScoredRecord`` rows (seed table 1) and ``Pair`` rows (seed table 2); anything that
could not be read becomes a ``Quarantined`` entry. Frames are always built with the
schema named here, never inferred.

The schemas (``SCORED_SCHEMA``, ``MESSAGES_DTYPE``, ...) are built on first use, so
``from ... import SCORED_SCHEMA`` works as usual while the record types import without
polars: the GPU machine has none, and sampling there (``Garbler``'s ``GarbleRequest``)
and collecting (``tasks/agent``) need only the types.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from enum import StrEnum
from functools import cache
from typing import TYPE_CHECKING, Any

from agir_retrain.tasks.chat import Role

if TYPE_CHECKING:
    import polars as pl


class Outcome(StrEnum):
    """How one code attempt ended, in the order the agent checks them."""

    AST_FAIL = "ast_fail"
    COMPILE_FAIL = "compile_fail"
    CONTAINER_FAIL = "container_fail"
    DELETION_FAIL = "deletion_fail"
    SUCCESS = "success"
    # Formats that record which stage failed (v5 attempt records, agir-run-format.md).
    EXTRACT_FAIL = "extract_fail"  # no code could be extracted from the reply
    VALIDATION_FAIL = "validation_fail"  # offline validation (parse/compile) failed
    RUN_FAIL = "run_fail"  # running it in the container failed

    @property
    def ran(self) -> bool:
        """Whether the code compiled and ran (it may still have freed nothing)."""
        return self in (Outcome.DELETION_FAIL, Outcome.SUCCESS)


class RunClass(StrEnum):
    """The seed's table-2 class of a run; each run falls in exactly one."""

    NO_RUNNABLE = "no_runnable"
    NEVER_FREED = "never_freed"
    MIXED = "mixed"
    FIRST_TRY = "first_try"
    INCONSISTENT = "inconsistent"


class UnitConvention(StrEnum):
    """How a file's ``space_freed`` was measured, and so how it becomes bytes."""

    KIB_NEW_MINUS_OLD = "kib_new_minus_old"  # v4 with env_agent.model_name (2025-05-20 on)
    MIB_OLD_MINUS_NEW = "mib_old_minus_new"  # older v4 and 2024-12: `df -m`, sign reversed
    KIB_FREED_V5 = "kib_freed_v5"  # v5 this_code_space_change_kb: KiB, positive when freed


class PromptKind(StrEnum):
    """Which prompt a scored record or pair answers."""

    STRATEGY = "strategy"  # P_s: the turns that asked for strategies
    CODE = "code"  # P_c: the turns up to the run's code request, which quotes the strategy
    ENV_GETTER = "env_getter"  # the env agent's discovery scripts (the seed's new_sp_egc_s)


class ResponseKind(StrEnum):
    """What a scored record's response holds."""

    STRAT = "strat"
    CODE = "code"


class PairRule(StrEnum):
    """The rule that made a pair."""

    MIXED = "mixed"
    FIRST_TRY_STRAT = "first_try_strat"
    FIRST_TRY_CODE = "first_try_code"
    BORROWED_CHOSEN = "borrowed_chosen"
    CROSS_RUN_STRAT = "cross_run_strat"


class GarbleMethod(StrEnum):
    """How a pair's rejected side was made."""

    NONE = "none"  # a natural rejected response from the run itself
    PENDING = "pending"  # a garble request: the rejected side is still to be sampled
    MODEL = "model"  # sampled from the base model at high temperature
    FALLBACK = "fallback"  # model-free corruption of the chosen text


class QuarantineReason(StrEnum):
    """Why a file or run could not be read. Each is counted in the report."""

    READ_ERROR = "read_error"
    NOT_A_REGULAR_FILE = "not_a_regular_file"  # a FIFO, socket, device or folder named *.json
    BROKEN_LINK = "broken_link"  # a symbolic link whose target is missing, or a link loop
    DUPLICATE_FILE = "duplicate_file"  # byte-identical to an earlier file (by sorted path)
    FILE_TOO_LARGE = "file_too_large"
    EMPTY_FILE = "empty_file"
    NOT_UTF8 = "not_utf8"
    TRUNCATED_JSON = "truncated_json"
    INVALID_JSON = "invalid_json"
    NOT_AN_OBJECT = "not_an_object"
    UNKNOWN_SCHEMA = "unknown_schema"
    MISSING_KEY = "missing_key"
    WRONG_TYPE = "wrong_type"
    NON_FINITE_NUMBER = "non_finite_number"
    BAD_HISTORY_ENTRY = "bad_history_entry"
    BAD_MESSAGE = "bad_message"
    UNKNOWN_OUTCOME = "unknown_outcome"
    BAD_ATTEMPT_NUMBER = "bad_attempt_number"  # an attempt numbered below 1
    MESSAGE_TOO_LARGE = "message_too_large"
    UNEXPECTED_ERROR = "unexpected_error"  # a bug in the reader: the detail holds the exception
    SHARD_FAILED = "shard_failed"  # the worker reading the file's shard died, retries spent


def _enum(values: type[StrEnum]) -> pl.Enum:
    import polars as pl

    return pl.Enum([member.value for member in values])


@dataclass(frozen=True, slots=True, kw_only=True)
class Message:
    """One chat message, as TRL's conversational format holds it."""

    role: Role
    content: str


@cache
def _message_dtype() -> pl.Struct:
    import polars as pl

    return pl.Struct({"role": _enum(Role), "content": pl.String})


@cache
def _messages_dtype() -> pl.List:
    import polars as pl

    return pl.List(_message_dtype())


@dataclass(frozen=True, slots=True, kw_only=True)
class Attempt:
    """One code attempt of a run, in the order the agent made it."""

    index: int
    outcome: Outcome
    message: str  # the assistant message verbatim, fence included
    code: str | None  # the text inside the ```python fence; None when there is no fence


@cache
def _attempt_dtype() -> pl.Struct:
    import polars as pl

    return pl.Struct(
        {"index": pl.Int32, "outcome": _enum(Outcome), "message": pl.String, "code": pl.String}
    )


@dataclass(frozen=True, slots=True, kw_only=True)
class Run:
    """One copy strategy agent of a run file: one strategy and its code attempts."""

    run_id: str  # "<file stem>#<copy index>@<content digest>" (run_ids.make_run_id)
    source: str  # the file's path or URL
    copy_index: int
    file_schema: str  # the name of the run format that read it (``runs/formats``)
    model_name: str | None
    strategy: str
    # The copy agent's chat up to its code request, a repeated strategy block dropped.
    # Both prompts are prefixes of it, kept once: P_s = conversation[:strategy_turns],
    # P_c = conversation[:code_turns]; a count of 0 means the file lacks that turn.
    conversation: tuple[Message, ...]
    strategy_turns: int
    code_turns: int
    env_getter_prompt: tuple[Message, ...]
    attempts: tuple[Attempt, ...]
    space_freed_raw: float | None  # as written in the file, in its own unit and sign
    space_freed_bytes: float  # normalised: bytes, positive when space was freed
    unit_convention: UnitConvention
    run_class: RunClass
    class_reason: str  # a short stable code, counted in the report ("no_attempt_ran")
    class_detail: str  # the same for a person, with the figures ("2 ast_fail, 1 compile_fail")
    # Formats that keep P_s and P_c as two separate lists store them back to back:
    # P_c = conversation[code_prompt_start:code_turns]; 0 where P_c extends P_s (v4, 2024-12).
    code_prompt_start: int = 0
    attempts_missing: int = 0  # attempt numbers below the highest present that no file holds

    @property
    def strategy_prompt(self) -> tuple[Message, ...]:
        """``P_s``: the turns through the first strategy request."""
        return self.conversation[: self.strategy_turns]

    @property
    def code_prompt(self) -> tuple[Message, ...]:
        """``P_c``: the turns through the run's code request, which quotes the strategy."""
        return self.conversation[self.code_prompt_start : self.code_turns]

    def prompt(self, kind: PromptKind) -> tuple[Message, ...]:
        """The prompt of one kind."""
        if kind is PromptKind.STRATEGY:
            return self.strategy_prompt
        if kind is PromptKind.CODE:
            return self.code_prompt
        return self.env_getter_prompt


def run_schema(file_schemas: Sequence[str]) -> pl.Schema:
    """``Run``'s schema, whose ``file_schema`` enum holds the registered run formats' names.

    The run-format registry (``runs/formats/registry.py``) names them, built-in formats
    first, so a new format needs no edit here (``tables.register_table``).
    """
    import polars as pl

    return pl.Schema(
        {
            "run_id": pl.String,
            "source": pl.String,
            "copy_index": pl.Int32,
            "file_schema": pl.Enum(list(file_schemas)),
            "model_name": pl.String,
            "strategy": pl.String,
            "conversation": _messages_dtype(),
            "strategy_turns": pl.Int32,
            "code_turns": pl.Int32,
            "env_getter_prompt": _messages_dtype(),
            "attempts": pl.List(_attempt_dtype()),
            "space_freed_raw": pl.Float64,
            "space_freed_bytes": pl.Float64,
            "unit_convention": _enum(UnitConvention),
            "run_class": _enum(RunClass),
            "class_reason": pl.String,
            "class_detail": pl.String,
            "code_prompt_start": pl.Int32,
            "attempts_missing": pl.Int32,
        }
    )


@dataclass(frozen=True, slots=True, kw_only=True)
class ScoredRecord:
    """One row of the seed's table 1: (prompt, response, score) for one attempt.

    The prompt is named by ``(run_id, prompt_kind)``, and its messages live once in
    ``runs.parquet``: a run's prompts would otherwise be copied into every row.
    """

    run_id: str
    attempt_index: int
    outcome: Outcome
    prompt_kind: PromptKind
    response_kind: ResponseKind
    response: str
    score_bytes: float


@cache
def _scored_schema() -> pl.Schema:
    import polars as pl

    return pl.Schema(
        {
            "run_id": pl.String,
            "attempt_index": pl.Int32,
            "outcome": _enum(Outcome),
            "prompt_kind": _enum(PromptKind),
            "response_kind": _enum(ResponseKind),
            "response": pl.String,
            "score_bytes": pl.Float64,
        }
    )


@dataclass(frozen=True, slots=True, kw_only=True)
class Pair:
    """One preference pair (seed table 2), or a garble request still to be filled.

    Like a scored record, a pair names its prompt by ``(run_id, prompt_kind)``; the
    messages live once in ``runs.parquet`` and the export joins them in. A pair with
    ``garble_method == PENDING`` has ``rejected is None``: the garbling stage samples
    it from the base model.
    """

    run_id: str
    source: str
    rule: PairRule
    prompt_kind: PromptKind
    chosen: str
    rejected: str | None
    score_chosen: float
    score_rejected: float
    garble_method: GarbleMethod
    rejected_attempt_index: int | None  # which failed attempt, for natural pairs

    @property
    def garbled(self) -> bool:
        """Whether the rejected side is (to be) made rather than taken from a run."""
        return self.garble_method is not GarbleMethod.NONE


@cache
def _pair_schema() -> pl.Schema:
    import polars as pl

    return pl.Schema(
        {
            "run_id": pl.String,
            "source": pl.String,
            "rule": _enum(PairRule),
            "prompt_kind": _enum(PromptKind),
            "chosen": pl.String,
            "rejected": pl.String,
            "score_chosen": pl.Float64,
            "score_rejected": pl.Float64,
            "garble_method": _enum(GarbleMethod),
            "rejected_attempt_index": pl.Int32,
        }
    )


@dataclass(frozen=True, slots=True, kw_only=True)
class Quarantined:
    """A file, or one run of a file, that could not be read, and why."""

    source: str
    run_id: str | None  # None when the whole file is quarantined
    reason: QuarantineReason
    detail: str


@cache
def _quarantine_schema() -> pl.Schema:
    import polars as pl

    return pl.Schema(
        {
            "source": pl.String,
            "run_id": pl.String,
            "reason": _enum(QuarantineReason),
            "detail": pl.String,
        }
    )


@dataclass(frozen=True, slots=True, kw_only=True)
class GarbleRequest:
    """A pending pair's prompt and chosen text, to be answered by a high-temperature sample."""

    run_id: str
    prompt_kind: PromptKind
    prompt: tuple[Message, ...]
    chosen: str

    @property
    def request_id(self) -> str:
        """Unique within a dataset: a run has at most one pending pair per prompt kind."""
        return f"{self.run_id}/{self.prompt_kind.value}"


@cache
def _garble_request_schema() -> pl.Schema:
    import polars as pl

    return pl.Schema(
        {
            "run_id": pl.String,
            "prompt_kind": _enum(PromptKind),
            "prompt": _messages_dtype(),
            "chosen": pl.String,
        }
    )


@dataclass(frozen=True, slots=True, kw_only=True)
class GarbleResult:
    """The rejected text made for one garble request, and how."""

    run_id: str
    prompt_kind: PromptKind
    rejected: str
    garble_method: GarbleMethod  # MODEL, or FALLBACK after every draw failed
    draws: int  # samples drawn from the model (the last one accepted unless FALLBACK)
    seed: int  # the seed of the accepted (or last) draw
    new_tokens: int


@cache
def _garble_result_schema() -> pl.Schema:
    import polars as pl

    return pl.Schema(
        {
            "run_id": pl.String,
            "prompt_kind": _enum(PromptKind),
            "rejected": pl.String,
            "garble_method": _enum(GarbleMethod),
            "draws": pl.Int32,
            "seed": pl.Int64,
            "new_tokens": pl.Int32,
        }
    )


_SCHEMAS = {
    "MESSAGE_DTYPE": _message_dtype,
    "MESSAGES_DTYPE": _messages_dtype,
    "ATTEMPT_DTYPE": _attempt_dtype,
    "SCORED_SCHEMA": _scored_schema,
    "PAIR_SCHEMA": _pair_schema,
    "QUARANTINE_SCHEMA": _quarantine_schema,
    "GARBLE_REQUEST_SCHEMA": _garble_request_schema,
    "GARBLE_RESULT_SCHEMA": _garble_result_schema,
}


def __getattr__(name: str) -> Any:
    """Build a schema on first use (polars is imported only then)."""
    if name in _SCHEMAS:
        schema = globals()[name] = _SCHEMAS[name]()
        return schema
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
