"""The v5 attempt record as read: its three types, the record kept, and its table schema.

A v5 file holds one attempt record. It cannot become a run alone (a run is a chain of
records in other files), so the reader keeps it as a ``V5Record`` until every shard is
read; shards pass them on in a parquet table of this schema (``record_parts.py``).
"""

from __future__ import annotations

from dataclasses import dataclass
from enum import StrEnum

import polars as pl

from agir_retrain.tasks.records import MESSAGES_DTYPE, Message, Outcome
from agir_retrain.tasks.schemas import register_table

FORMAT_NAME = "v5"  # the format's name: Run.file_schema of every chain
PART_FILE = "v5_records.parquet"  # each shard's records, in this table (record_parts.py)


class V5RecordType(StrEnum):
    """The three kinds of v5 attempt record (the ``{type}`` in their file names)."""

    ENV_GETTER_CODE = "special_environment_getter_code"
    STRATEGY_LIST = "strategy_list"
    STRATEGY_CODE = "strategy_code"


@dataclass(frozen=True, slots=True, kw_only=True)
class V5Record:
    """One validated v5 attempt record, kept until its chain can be formed.

    Shards read files independently, so a chain's records may be read in different
    shards: each shard writes its records to a table, and chains are formed when every
    shard is done (``chains.py``). ``group_hash`` hashes (version, run_id): every record
    of one agent run shares it, so the assembly can take the records in hash ranges and
    hold one range at a time.
    """

    group_hash: int  # u64
    source: str
    record_type: V5RecordType
    version: str
    agent_run_id: str  # the agent's own run_id (one agent run, many chains)
    current_attempt: int
    max_attempts: int
    prompt: tuple[Message, ...]
    raw_response: str
    # strategy_code: the spec's outcome; getters: SUCCESS (output), else the failing stage;
    # strategy_list: SUCCESS (a list was extracted) or EXTRACT_FAIL.
    outcome: Outcome
    code: str | None  # extract_result_if_ok, else the first ```python block of raw_response
    strategy: str | None  # strategy_code only
    strategies_hash: str | None  # strategy_code only
    special_env_info_hashes: tuple[str, ...]
    strategies: tuple[str, ...]  # strategy_list: the strategies extracted
    # getter: run_result_if_ok_hash (sha256 of its output); strategy_list:
    # extract_result_if_ok_hash (sha256 of the strategies joined with commas);
    # strategy_code: run_result_if_ok_hash (sha256 of the code).
    result_hash: str | None
    space_change_kib: float | None  # strategy_code: this_code_space_change_kb


def _enum(values: type[StrEnum]) -> pl.Enum:
    return pl.Enum([member.value for member in values])


V5_RECORD_SCHEMA = pl.Schema(
    {
        "group_hash": pl.UInt64,
        "source": pl.String,
        "record_type": _enum(V5RecordType),
        "version": pl.String,
        "agent_run_id": pl.String,
        "current_attempt": pl.Int64,
        "max_attempts": pl.Int64,
        "prompt": MESSAGES_DTYPE,
        "raw_response": pl.String,
        "outcome": _enum(Outcome),
        "code": pl.String,
        "strategy": pl.String,
        "strategies_hash": pl.String,
        "special_env_info_hashes": pl.List(pl.String),
        "strategies": pl.List(pl.String),
        "result_hash": pl.String,
        "space_change_kib": pl.Float64,
    }
)


def _strings(values: list[str] | None) -> tuple[str, ...]:
    return tuple(values or ())


register_table(
    V5Record,
    V5_RECORD_SCHEMA,
    enums={"record_type": V5RecordType},
    nested={"special_env_info_hashes": _strings, "strategies": _strings},
)
