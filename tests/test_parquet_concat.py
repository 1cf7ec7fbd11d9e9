"""Joining parquet parts without decoding gives the same table as decoding and joining."""

from __future__ import annotations

import polars as pl
import pyarrow as pa
import pyarrow.parquet as pq
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from agir_retrain.tasks.parquet_concat import concat_parquet

rows = st.lists(
    st.tuples(
        st.text(max_size=30),
        st.one_of(st.none(), st.integers(-(2**40), 2**40)),
        st.lists(st.sampled_from(["system", "user", "assistant"]), max_size=5),
        st.floats(allow_nan=False),
        st.booleans(),
    ),
    max_size=40,
)


def _write(path, data, row_group_size):
    table = pa.table(
        {
            "text": [r[0] for r in data],
            "number": pa.array([r[1] for r in data], pa.int64()),
            "roles": pa.array([r[2] for r in data], pa.large_list(pa.string())),
            "score": [r[3] for r in data],
            "flag": [r[4] for r in data],
        }
    ).cast(
        pa.schema(
            [
                ("text", pa.large_string()),
                ("number", pa.int64()),
                ("roles", pa.large_list(pa.dictionary(pa.uint8(), pa.large_string()))),
                ("score", pa.float64()),
                ("flag", pa.bool_()),
            ]
        )
    )
    pq.write_table(table, path, row_group_size=max(1, row_group_size), compression="zstd")
    return table


@given(parts=st.lists(st.tuples(rows, st.integers(1, 10)), min_size=1, max_size=5))
@settings(max_examples=60, deadline=None)
def test_matches_decode_and_concat(tmp_path_factory, parts):
    folder = tmp_path_factory.mktemp("parts")
    paths, tables = [], []
    for i, (data, group) in enumerate(parts):
        path = folder / f"part-{i}.parquet"
        tables.append(_write(path, data, group))
        paths.append(path)
    target = folder / "all.parquet"
    assert concat_parquet(paths, target) == sum(t.num_rows for t in tables)
    expected = pa.concat_tables([pq.read_table(path) for path in paths])
    assert pq.read_table(target).equals(expected)
    assert pl.read_parquet(target).equals(pl.from_arrow(expected))
    metadata = pq.ParquetFile(target).metadata
    assert metadata.num_rows == expected.num_rows
    for i in range(metadata.num_row_groups):  # every row group readable on its own
        pq.ParquetFile(target).read_row_group(i)


def test_refuses_a_different_schema(tmp_path):
    pq.write_table(pa.table({"a": [1]}), tmp_path / "a.parquet")
    pq.write_table(pa.table({"b": [1]}), tmp_path / "b.parquet")
    with pytest.raises(ValueError, match="schema differs"):
        concat_parquet([tmp_path / "a.parquet", tmp_path / "b.parquet"], tmp_path / "x.parquet")


def test_refuses_parts_with_a_page_index(tmp_path):
    pq.write_table(pa.table({"a": [1, 2]}), tmp_path / "a.parquet", write_page_index=True)
    with pytest.raises(ValueError, match="page index"):
        concat_parquet([tmp_path / "a.parquet"], tmp_path / "x.parquet")


def test_refuses_a_file_that_is_not_parquet(tmp_path):
    (tmp_path / "a.parquet").write_bytes(b"not parquet at all")
    with pytest.raises(ValueError, match="not a parquet file"):
        concat_parquet([tmp_path / "a.parquet"], tmp_path / "x.parquet")
