"""Each record type and its schema agree, and frames round-trip through parquet."""

from __future__ import annotations

import dataclasses
from pathlib import Path

import polars as pl
import pytest

from agir_retrain.tasks.records import Pair, Quarantined, Run, ScoredRecord
from agir_retrain.tasks.runs.formats.v5.schema import V5Record
from agir_retrain.tasks.runs.pairing import pair_run
from agir_retrain.tasks.runs.reader import read_run_file
from agir_retrain.tasks.runs.scoring import score_run
from agir_retrain.tasks.tables import SCHEMAS, ParquetSink, from_frame, read_table, to_frame


@pytest.mark.parametrize("record_type", [Run, ScoredRecord, Pair, Quarantined, V5Record])
def test_schema_fields_match_the_record(record_type):
    assert [f.name for f in dataclasses.fields(record_type)] == list(SCHEMAS[record_type].names())


def test_round_trip_through_parquet(tmp_path, data_file):
    runs = list(read_run_file(data_file("v4_kib.json")).runs)
    runs += read_run_file(data_file("legacy_2024_12.json")).runs
    v5 = sorted(Path(data_file("v5")).glob("d8c344-*.json"))
    records = {
        Run: runs,
        ScoredRecord: [r for run in runs for r in score_run(run)],
        Pair: [p for run in runs for p in pair_run(run).pairs],
        Quarantined: list(read_run_file(data_file("bad_runs.json")).quarantined),
        V5Record: [r for path in v5 for r in read_run_file(str(path)).pending],
    }
    assert len(records[V5Record]) == len(v5) == 5
    for record_type, rows in records.items():
        path = tmp_path / f"{record_type.__name__}.parquet"
        with ParquetSink(path, record_type, rows_per_group=2) as sink:
            sink.extend(rows)
        frame = read_table(path, record_type)
        assert frame.schema == SCHEMAS[record_type]
        assert list(from_frame(frame, record_type)) == rows


def test_empty_sink_still_writes_the_schema(tmp_path):
    path = tmp_path / "empty.parquet"
    ParquetSink(path, Pair).close()
    frame = read_table(path, Pair)
    assert frame.height == 0
    assert frame.schema == SCHEMAS[Pair]


def test_frame_uses_enums(data_file):
    frame = to_frame(read_run_file(data_file("v4_kib.json")).runs, Run)
    assert isinstance(frame.schema["run_class"], pl.Enum)
    assert frame["run_class"].to_list() == ["first_try", "mixed", "never_freed", "no_runnable"]
