"""Ingest end to end on a synthetic corpus, held to its ground truth."""

from __future__ import annotations

import json
from pathlib import Path

import fsspec
import orjson
import polars as pl
import pytest

from agir_retrain.tasks.io import expand_inputs
from agir_retrain.tasks.records import GarbleRequest, Pair, Run, ScoredRecord
from agir_retrain.tasks.runs.ingest import GARBLE_REQUESTS_FILE, ingest, ingest_shard
from agir_retrain.tasks.runs.reader import ReadLimits
from agir_retrain.tasks.synth.corpus import write_corpus
from agir_retrain.tasks.tables import read_table

OUTPUTS = ("runs.parquet", "scored.parquet", "pairs.parquet", "quarantine.jsonl", "report.json")


@pytest.fixture(scope="module")
def corpus(tmp_path_factory) -> Path:
    folder = tmp_path_factory.mktemp("corpus")
    write_corpus(folder, runs=200, seed=11)
    return folder


def _ingest(corpus: Path, out: Path, **options) -> dict:
    settings = {"limits": ReadLimits(), "shard_bytes": 1 << 20, "workers": 1} | options
    ingest([str(corpus / "runs")], str(out), **settings)
    return json.loads((out / "report.json").read_text())


def _nonzero(counts: dict) -> dict:
    return {k: v for k, v in counts.items() if v}


class TestAgainstGroundTruth:
    def test_report_matches(self, corpus, tmp_path):
        report = _ingest(corpus, tmp_path)
        truth = json.loads((corpus / "ground_truth.json").read_text())["totals"]
        for key in ("files_in", "files_read", "files_quarantined", "runs_in", "runs_quarantined",
                    "pairs_skipped_identical"):  # fmt: skip
            assert report[key] == truth[key], key
        for key in ("runs_by_class", "pairs_by_rule", "quarantine_reasons"):
            assert _nonzero(report[key]) == _nonzero(truth[key]), key

    def test_every_run_has_its_class_and_reason(self, corpus, tmp_path):
        _ingest(corpus, tmp_path)
        truth = json.loads((corpus / "ground_truth.json").read_text())
        expected = {
            run["run_id"]: (run["class"], run["reason"])
            for file in truth["files"]
            for run in file["runs"]
            if run["class"]
        }
        runs = read_table(tmp_path / "runs.parquet", Run)
        got = {
            row["run_id"]: (row["run_class"], row["class_reason"])
            for row in runs.iter_rows(named=True)
        }
        assert got == expected

    def test_every_quarantine_entry_names_file_run_reason_and_detail(self, corpus, tmp_path):
        _ingest(corpus, tmp_path)
        truth = json.loads((corpus / "ground_truth.json").read_text())
        expected = {(f["name"], None, f["quarantine"]) for f in truth["files"] if f["quarantine"]}
        expected |= {
            (f["name"], run["run_id"], run["quarantine"])
            for f in truth["files"]
            for run in f["runs"]
            if run["quarantine"]
        }
        lines = (tmp_path / "quarantine.jsonl").read_bytes().splitlines()
        entries = [orjson.loads(line) for line in lines]
        assert {(Path(e["source"]).name, e["run_id"], e["reason"]) for e in entries} == expected
        assert all(e["detail"] for e in entries)

    def test_tables_hold_what_the_report_counts(self, corpus, tmp_path):
        report = _ingest(corpus, tmp_path)
        assert read_table(tmp_path / "runs.parquet", Run).height == sum(
            report["runs_by_class"].values()
        )
        assert (
            read_table(tmp_path / "scored.parquet", ScoredRecord).height == report["scored_records"]
        )
        pairs = read_table(tmp_path / "pairs.parquet", Pair)
        assert pairs.height == sum(report["pairs_by_rule"].values())
        assert pairs.filter(pl.col("rejected").is_null()).height == report["garble_requests"]


class TestDeterminism:
    def test_same_inputs_give_byte_identical_outputs(self, corpus, tmp_path):
        _ingest(corpus, tmp_path / "a")
        _ingest(corpus, tmp_path / "b")
        for name in OUTPUTS:
            assert (tmp_path / "a" / name).read_bytes() == (tmp_path / "b" / name).read_bytes(), (
                name
            )

    @pytest.mark.slow
    def test_worker_count_does_not_change_the_bytes(self, corpus, tmp_path):
        _ingest(corpus, tmp_path / "one", workers=1)
        _ingest(corpus, tmp_path / "two", workers=2)
        for name in OUTPUTS:
            assert (tmp_path / "one" / name).read_bytes() == (tmp_path / "two" / name).read_bytes()


def test_handmade_files_balance(data_file, tmp_path):
    folder = Path(data_file("v4_kib.json")).parent
    ingest([str(folder)], str(tmp_path), limits=ReadLimits(), shard_bytes=1 << 20, workers=1)
    report = json.loads((tmp_path / "report.json").read_text())
    assert report["files_in"] == report["files_read"] + report["files_quarantined"] == 13
    assert report["runs_in"] == sum(report["runs_by_class"].values()) + report["runs_quarantined"]


def test_garble_requests_are_written_only_when_asked(corpus, tmp_path):
    files = expand_inputs([str(corpus / "runs")])[:40]
    plain = ingest_shard(files, str(tmp_path / "plain"), ReadLimits())
    assert not (tmp_path / "plain" / GARBLE_REQUESTS_FILE).exists()
    asked = ingest_shard(files, str(tmp_path / "asked"), ReadLimits(), with_garble_requests=True)
    requests = read_table(str(tmp_path / "asked" / GARBLE_REQUESTS_FILE), GarbleRequest)
    assert requests.height == asked.garble_requests == plain.garble_requests > 0


def test_object_storage_urls_in_and_out(data_file, tmp_path):
    memory = fsspec.filesystem("memory")
    for name in ("v4_kib.json", "legacy_2024_12.json", "truncated.json"):
        memory.pipe(f"/bucket/runs/{name}", Path(data_file(name)).read_bytes())
    ingest(
        ["memory://bucket/runs"],
        "memory://bucket/out",
        limits=ReadLimits(),
        shard_bytes=1 << 20,
        workers=1,
    )
    report = json.loads(memory.cat("/bucket/out/report.json"))
    assert (report["files_read"], report["files_quarantined"], report["runs_in"]) == (2, 1, 6)
    with memory.open("/bucket/out/runs.parquet") as handle:
        assert pl.read_parquet(handle).height == 6


def test_missing_input_is_a_clear_error(tmp_path):
    with pytest.raises(FileNotFoundError, match="no run files"):
        ingest(
            [str(tmp_path / "nothing")],
            str(tmp_path / "out"),
            limits=ReadLimits(),
            shard_bytes=1,
            workers=1,
        )
