"""Records to polars frames (always with the schema named in ``records.py``) and back.

Each record type's schema is looked up in ``schemas.py``, where a stage registers the
types it owns (``Run``'s ``file_schema`` enum lists the registered run formats).

Conversion is column-wise through pyarrow, which builds nested list/struct columns
from Python objects in C++; row-by-row polars construction was several times slower.
"""

from __future__ import annotations

import functools
from collections.abc import Callable, Iterable, Iterator, Sequence
from enum import StrEnum
from pathlib import Path
from typing import Any

import polars as pl
import pyarrow as pa
import pyarrow.parquet as pq

from agir_retrain.tasks.records import (
    Attempt,
    GarbleMethod,
    Message,
    Outcome,
    PairRule,
    PromptKind,
    QuarantineReason,
    ResponseKind,
    Role,
    RunClass,
    UnitConvention,
)
from agir_retrain.tasks.schemas import EXTRA_READERS, SCHEMAS, schema_version

# zstd level 1 compresses chat text ~6x at ~430 MB/s; statistics on megabyte-long strings cost
# time and help no query, so only flat, short columns get them. No page index: its absolute
# page offsets would stop `concat_parquet` from joining shard files without decoding them.
PARQUET_OPTIONS: dict[str, Any] = {
    "compression": "zstd",
    "compression_level": 1,
    "write_page_index": False,
}
BULKY_TEXT = frozenset(
    {"strategy", "response", "chosen", "rejected", "class_detail", "detail", "raw_response", "code"}
)


def to_arrow(records: Sequence[Any], record_type: type) -> pa.Table:
    """Build an arrow table of one record type, typed exactly as its polars schema exports.

    Nested columns are built from flattened values and offsets, and enums from their
    category indices, so no per-message dict is ever made.
    """
    schema = SCHEMAS[record_type]
    arrow_schema = _arrow_schema(record_type)
    columns = [
        _column(
            [getattr(record, name) for record in records],
            schema[name],
            arrow_schema.field(name).type,
        )
        for name in schema.names()
    ]
    return pa.Table.from_arrays(columns, schema=arrow_schema)


def to_frame(records: Sequence[Any], record_type: type) -> pl.DataFrame:
    """Build a polars frame of one record type with that type's schema."""
    return pl.from_arrow(to_arrow(records, record_type))  # type: ignore[return-value]


def _arrow_schema(record_type: type) -> pa.Schema:
    """The arrow schema polars exports for a record type (enums carry polars' metadata)."""
    return _arrow_schema_at(record_type, schema_version())


@functools.cache
def _arrow_schema_at(record_type: type, _version: int) -> pa.Schema:
    return pl.DataFrame(schema=SCHEMAS[record_type]).to_arrow().schema


@functools.cache
def _enum_index(dtype: pl.Enum) -> dict[str, int]:
    return {category: i for i, category in enumerate(dtype.categories.to_list())}


def _column(values: list[Any], dtype: pl.DataType, arrow_type: pa.DataType) -> pa.Array:
    if isinstance(dtype, pl.List):
        offsets = [0]
        flat: list[Any] = []
        for items in values:
            flat.extend(items)
            offsets.append(len(flat))
        child = _column(flat, dtype.inner, arrow_type.value_type)
        return pa.LargeListArray.from_arrays(pa.array(offsets, pa.int64()), child, type=arrow_type)
    if isinstance(dtype, pl.Struct):
        fields = list(arrow_type)
        children = [
            _column([getattr(value, f.name) for value in values], f.dtype, field.type)
            for f, field in zip(dtype.fields, fields, strict=True)
        ]
        return pa.StructArray.from_arrays(children, fields=fields)
    if isinstance(dtype, pl.Enum):
        index = _enum_index(dtype)
        indices = pa.array([None if v is None else index[v] for v in values], arrow_type.index_type)
        categories = pa.array(dtype.categories.to_list(), arrow_type.value_type)
        return pa.DictionaryArray.from_arrays(indices, categories, ordered=arrow_type.ordered)
    return pa.array(values, type=arrow_type)


_ENUMS: dict[str, type[StrEnum]] = {
    "role": Role,
    "outcome": Outcome,
    "unit_convention": UnitConvention,
    "run_class": RunClass,
    "prompt_kind": PromptKind,
    "response_kind": ResponseKind,
    "rule": PairRule,
    "garble_method": GarbleMethod,
    "reason": QuarantineReason,
}


def _messages(rows: list[dict] | None) -> tuple[Message, ...]:
    return tuple(Message(role=Role(m["role"]), content=m["content"]) for m in rows or ())


def _attempts(rows: list[dict] | None) -> tuple[Attempt, ...]:
    return tuple(
        Attempt(
            index=a["index"], outcome=Outcome(a["outcome"]), message=a["message"], code=a["code"]
        )
        for a in rows or ()
    )


_NESTED_READERS = {
    "conversation": _messages,
    "prompt": _messages,
    "env_getter_prompt": _messages,
    "attempts": _attempts,
}


@functools.cache
def _readers(record_type: type, _version: int) -> dict[str, tuple[Callable[[Any], Any], bool]]:
    """Each column's reader, and whether it also takes None (nested ones do)."""
    readers: dict[str, tuple[Callable[[Any], Any], bool]] = {}
    extra = EXTRA_READERS.get(record_type, {})
    for name in SCHEMAS[record_type].names():
        if name in extra:
            reader = extra[name]
            readers[name] = (reader, not isinstance(reader, type))
        elif name in _NESTED_READERS:
            readers[name] = (_NESTED_READERS[name], True)
        elif name in _ENUMS:
            readers[name] = (_ENUMS[name], False)
    return readers


def from_frame(frame: pl.DataFrame, record_type: type) -> Iterator[Any]:
    """Yield records of one type from a frame that has that type's schema."""
    names = list(SCHEMAS[record_type].names())
    readers = _readers(record_type, schema_version())
    for row in frame.select(names).iter_rows(named=True):
        for name, (reader, takes_none) in readers.items():
            value = row[name]
            if takes_none or value is not None:
                row[name] = reader(value)
        yield record_type(**row)


class ParquetSink:
    """Append frames of one schema to a parquet file, one row group per flush.

    Rows are buffered as records and written once ``rows_per_group`` accumulate, so
    memory stays bounded however many rows pass through.
    """

    def __init__(self, path: Path, record_type: type, rows_per_group: int = 2048) -> None:
        self.path = path
        self.record_type = record_type
        self.rows_per_group = rows_per_group
        self.rows_written = 0
        self._buffer: list[Any] = []
        self._writer: pq.ParquetWriter | None = None

    def extend(self, records: Iterable[Any]) -> None:
        """Buffer records; write a row group when the buffer is full."""
        self._buffer.extend(records)
        if len(self._buffer) >= self.rows_per_group:
            self.flush()

    def flush(self) -> None:
        """Write the buffered records as one row group."""
        if not self._buffer and self._writer is not None:
            return
        table = to_arrow(self._buffer, self.record_type)
        if self._writer is None:
            self._writer = pq.ParquetWriter(
                self.path,
                table.schema,
                write_statistics=_statistics_columns(self.record_type, schema_version()),
                **PARQUET_OPTIONS,
            )
        if table.num_rows:
            self._writer.write_table(table)
        self.rows_written += table.num_rows
        self._buffer.clear()

    def close(self) -> None:
        """Write what is buffered and close the file (an empty file still gets the schema)."""
        self.flush()
        if self._writer is not None:
            self._writer.close()
            self._writer = None

    def __enter__(self) -> ParquetSink:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()


@functools.cache
def _statistics_columns(record_type: type, _version: int) -> list[str]:
    schema = SCHEMAS[record_type]
    return [
        name
        for name, dtype in schema.items()
        if name not in BULKY_TEXT and not isinstance(dtype, pl.List | pl.Struct)
    ]


def read_table(path: str | Path, record_type: type) -> pl.DataFrame:
    """Read a parquet file written by a ``ParquetSink``, checking it has the right schema."""
    frame = pl.read_parquet(path)
    expected = SCHEMAS[record_type]
    if frame.schema != expected:
        raise ValueError(
            f"{path}: schema {dict(frame.schema)} differs from {record_type.__name__}'s {dict(expected)}"
        )
    return frame
