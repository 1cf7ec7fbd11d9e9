"""Ingest end to end on a synthetic corpus, held to its ground truth."""

from __future__ import annotations

import json
from pathlib import Path

import fsspec
import orjson
import polars as pl
import pytest

from agir_retrain.tasks.filenames import GARBLE_REQUESTS_FILE
from agir_retrain.tasks.inputs import expand_inputs
from agir_retrain.tasks.records import GarbleRequest, Pair, Run, ScoredRecord
from agir_retrain.tasks.runs.ingest import ingest, ingest_shard
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
    files = len(list(folder.rglob("*.json")))  # the v4 quirks and the v5 records below them
    assert report["files_in"] == report["files_read"] + report["files_quarantined"] == files
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


SPLITS = ("train", "eval")


def _jsonl(path: Path) -> list[dict]:
    return [orjson.loads(line) for line in path.read_bytes().splitlines()]


class TestFilesNamedAlike:
    """Two machines' folders holding different files of one name (the agent names by the second)."""

    NAME = "full_agent_data_2025_06_01_10_00_00.json"

    @pytest.fixture
    def machines(self, data_file, tmp_path) -> Path:
        text = Path(data_file("v4_kib.json")).read_text()
        for machine in ("a", "b"):
            folder = tmp_path / "corpus" / machine
            folder.mkdir(parents=True)
            # Each machine's system prompt names the machine, so a row shows whose prompt it has.
            document = json.loads(text)
            for agent in [document["main_strat_agent"], *document["copy_strat_agents"]]:
                agent["tagged_chat_history"][0][0]["content"] += f" [machine {machine}]"
            (folder / self.NAME).write_text(json.dumps(document, indent=2))
        return tmp_path / "corpus"

    def test_each_row_carries_its_own_files_prompt_and_counts_add_up(
        self, machines, tmp_path, ingest_with_stand_ins
    ):
        from agir_retrain.tasks.dataset.export import export_dataset
        from agir_retrain.tasks.settings.models import ExportSettings

        alone = ingest_with_stand_ins(tmp_path / "alone", [str(machines / "a")])
        both = ingest_with_stand_ins(tmp_path / "both", [str(machines)])
        settings = ExportSettings(eval_share=0.5)
        one = export_dataset(str(alone), str(tmp_path / "one"), settings)
        two = export_dataset(str(both), str(tmp_path / "two"), settings)

        runs = pl.read_parquet(both / "runs.parquet")
        assert runs.height == runs.get_column("run_id").n_unique() == 8
        report = json.loads((both / "report.json").read_text())
        pairs = sum(report["pairs_by_rule"].values())
        rows = {split: _jsonl(tmp_path / "two" / "dpo" / f"{split}.jsonl") for split in SPLITS}
        rows_alone = sum(len(_jsonl(tmp_path / "one" / "dpo" / f"{s}.jsonl")) for s in SPLITS)
        every = rows["train"] + rows["eval"]
        assert len(every) == two.dpo_train_rows + two.dpo_eval_rows == pairs == 2 * rows_alone
        for row in every:
            machine = Path(row["source"]).parent.name
            assert row["prompt"][0]["content"].endswith(f"[machine {machine}]"), row["run_id"]
        assert two.kto_rows == 2 * one.kto_rows
        # The split is by run: no run id lands on both sides.
        train, held_out = ({r["run_id"] for r in rows[s]} for s in SPLITS)
        assert not train & held_out

    def test_garble_request_ids_are_distinct(self, machines, tmp_path):
        files = expand_inputs([str(machines)])
        ingest_shard(files, str(tmp_path / "shard"), ReadLimits(), with_garble_requests=True)
        requests = read_table(str(tmp_path / "shard" / GARBLE_REQUESTS_FILE), GarbleRequest)
        ids = [f"{r['run_id']}/{r['prompt_kind']}" for r in requests.iter_rows(named=True)]
        assert len(ids) == len(set(ids)) == 4  # two first-try runs, a strategy and a code each

    def test_byte_identical_files_keep_the_first_by_sorted_path(self, machines, tmp_path):
        copy = machines / "c" / self.NAME
        copy.parent.mkdir()
        copy.write_bytes((machines / "a" / self.NAME).read_bytes())
        # However the corpus is cut into shards, the later path is the duplicate.
        for shard_bytes in (1, 1 << 30):
            out = tmp_path / f"out-{shard_bytes}"
            ingest(
                [str(machines)], str(out), limits=ReadLimits(), shard_bytes=shard_bytes, workers=1
            )
            report = json.loads((out / "report.json").read_text())
            assert report["files_in"] == 3
            assert report["quarantine_reasons"] == {"duplicate_file": 1}
            (entry,) = [
                orjson.loads(x) for x in (out / "quarantine.jsonl").read_bytes().splitlines()
            ]
            assert entry["source"] == str(copy)
            assert entry["detail"] == f"byte-identical to {machines / 'a' / self.NAME}"
            assert pl.read_parquet(out / "runs.parquet").height == 8


def test_assembly_fails_loudly_when_two_runs_share_an_id(data_file, tmp_path):
    from agir_retrain.tasks.errors import AgirError
    from agir_retrain.tasks.runs.gather import DatasetWriter

    files = expand_inputs([data_file("v4_kib.json")])
    for name in ("one", "two"):  # the same run ids in two shards, as a clash would give
        ingest_shard(files, str(tmp_path / name), ReadLimits())
    writer = DatasetWriter(str(tmp_path / "out"))
    writer.add(str(tmp_path / "one"))
    with pytest.raises(AgirError, match=r"two runs share the id 'v4_kib#0@[0-9a-f]{10}'") as info:
        writer.add(str(tmp_path / "two"))
    assert str(info.value).count(data_file("v4_kib.json")) == 2
    writer.abort()
    assert not (tmp_path / "out").exists() or not any((tmp_path / "out").iterdir())
