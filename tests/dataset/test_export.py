"""The DPO and KTO files: TRL's formats, the split by run, duplicates, and the options."""

from __future__ import annotations

import json
from pathlib import Path

import polars as pl
import pytest

from agir_retrain.tasks.dataset.export import export_dataset, split_of
from agir_retrain.tasks.settings.models import ExportSettings
from agir_retrain.tasks.synth.corpus import write_corpus


def _rows(path: Path) -> list[dict]:
    return [json.loads(line) for line in path.read_text().splitlines()]


@pytest.fixture(scope="module")
def synthetic(tmp_path_factory, ingest_with_stand_ins) -> Path:
    root = tmp_path_factory.mktemp("export")
    write_corpus(root / "corpus", runs=150, seed=21)
    return ingest_with_stand_ins(root / "dataset", [str(root / "corpus" / "runs")])


class TestDpo:
    def test_rows_are_trl_conversational_preference_rows(self, synthetic, tmp_path):
        export_dataset(str(synthetic), str(tmp_path), ExportSettings())
        row = _rows(tmp_path / "dpo" / "train.jsonl")[0]
        assert list(row) == [
            "prompt", "chosen", "rejected", "score_chosen", "score_rejected", "rule", "garbled",
            "garble_method", "run_id", "source",
        ]  # fmt: skip
        assert row["prompt"][0]["role"] == "system"
        assert row["prompt"][-1]["role"] == "user"
        assert [m["role"] for m in row["chosen"]] == ["assistant"]
        assert [m["role"] for m in row["rejected"]] == ["assistant"]
        assert isinstance(row["score_chosen"], float)

    def test_prompt_is_the_pairs_prompt_kind(self, synthetic, tmp_path):
        export_dataset(str(synthetic), str(tmp_path), ExportSettings())
        for row in _rows(tmp_path / "dpo" / "train.jsonl"):
            if row["rule"] == "first_try_strat":
                assert "strateg" in row["prompt"][-1]["content"].lower()
            else:
                assert "generate Python code" in row["prompt"][-1]["content"]

    def test_split_is_by_run(self, synthetic, tmp_path):
        report = export_dataset(str(synthetic), str(tmp_path), ExportSettings(eval_share=0.3))
        train = {r["run_id"] for r in _rows(tmp_path / "dpo" / "train.jsonl")}
        evaluation = {r["run_id"] for r in _rows(tmp_path / "dpo" / "eval.jsonl")}
        assert train
        assert evaluation
        assert not train & evaluation
        assert all(split_of(r, 0, 0.3) == "eval" for r in evaluation)
        assert (report.train_runs, report.eval_runs) == (len(train), len(evaluation))

    def test_counts_add_up_to_the_pairs(self, synthetic, tmp_path):
        report = export_dataset(str(synthetic), str(tmp_path), ExportSettings())
        pairs = pl.read_parquet(synthetic / "pairs.parquet").height
        assert report.dpo_train_rows + report.dpo_eval_rows + report.duplicates_dropped == pairs
        assert sum(report.pairs_by_rule.values()) == report.dpo_train_rows + report.dpo_eval_rows

    def test_identical_rows_are_written_once(self, data_file, tmp_path, ingest_with_stand_ins):
        folder = Path(data_file("v4_kib.json")).parent
        dataset = ingest_with_stand_ins(
            tmp_path / "d", [str(folder / "v4_kib.json"), str(folder / "bad_runs.json")]
        )
        pairs = pl.read_parquet(dataset / "pairs.parquet")
        pl.concat([pairs, pairs]).write_parquet(dataset / "pairs.parquet")
        report = export_dataset(str(dataset), str(tmp_path / "out"), ExportSettings(eval_share=0))
        assert report.duplicates_dropped == pairs.height
        assert report.dpo_train_rows == pairs.height

    def test_same_inputs_same_bytes(self, synthetic, tmp_path):
        export_dataset(str(synthetic), str(tmp_path / "a"), ExportSettings())
        export_dataset(str(synthetic), str(tmp_path / "b"), ExportSettings())
        for name in ("dpo/train.jsonl", "dpo/eval.jsonl", "kto/train.jsonl"):
            assert (tmp_path / "a" / name).read_bytes() == (tmp_path / "b" / name).read_bytes()

    def test_runs_without_a_pair_give_empty_dpo_files(self, synthetic, tmp_path):
        """Every run failed (a weak model's collection): no pairs, files still written."""
        dataset = tmp_path / "no-pairs"
        dataset.mkdir()
        for name in ("runs.parquet", "scored.parquet"):
            (dataset / name).write_bytes((synthetic / name).read_bytes())
        pairs = pl.read_parquet(synthetic / "pairs.parquet")
        pairs.clear().write_parquet(dataset / "pairs.parquet")
        report = export_dataset(str(dataset), str(tmp_path / "out"), ExportSettings())
        assert (report.dpo_train_rows, report.dpo_eval_rows) == (0, 0)
        assert (tmp_path / "out" / "dpo" / "train.jsonl").read_bytes() == b""
        assert report.kto_rows > 0


class TestKto:
    def test_every_scored_record_of_a_consistent_run(self, synthetic, tmp_path):
        report = export_dataset(str(synthetic), str(tmp_path), ExportSettings())
        rows = _rows(tmp_path / "kto" / "train.jsonl")
        scored = pl.read_parquet(synthetic / "scored.parquet").height
        assert len(rows) == report.kto_rows == scored - report.kto_skipped_inconsistent
        assert report.kto_skipped_inconsistent > 0
        assert {r["label"] for r in rows} == {True, False}
        assert all(r["label"] == (r["score"] > 0) for r in rows)
        assert list(rows[0])[:3] == ["prompt", "completion", "label"]
        env_getter = [r for r in rows if r["prompt_kind"] == "env_getter"]
        assert env_getter
        assert all(r["prompt"][0]["role"] == "user" for r in env_getter)


class TestOptions:
    def test_borrowed_chosen(self, data_file, tmp_path, ingest_with_stand_ins):
        document = json.loads(Path(data_file("v4_kib.json")).read_text())
        never_freed = document["copy_strat_agents"][2]
        never_freed["chosen_strat"] = document["copy_strat_agents"][0][
            "chosen_strat"
        ]  # a strategy that succeeded elsewhere
        (tmp_path / "runs").mkdir()
        (tmp_path / "runs" / "shared.json").write_text(json.dumps(document))
        dataset = ingest_with_stand_ins(tmp_path / "d", [str(tmp_path / "runs")])
        plain = export_dataset(str(dataset), str(tmp_path / "plain"), ExportSettings(eval_share=0))
        borrowed = export_dataset(
            str(dataset),
            str(tmp_path / "borrowed"),
            ExportSettings(eval_share=0, borrowed_chosen=True),
        )
        assert "borrowed_chosen" not in plain.pairs_by_rule
        assert borrowed.pairs_by_rule["borrowed_chosen"] == 1
        (row,) = [
            r
            for r in _rows(tmp_path / "borrowed" / "dpo" / "train.jsonl")
            if r["rule"] == "borrowed_chosen"
        ]
        assert row["run_id"].startswith("shared#2@")  # <file stem>#<copy index>@<digest>
        assert (
            row["chosen"][0]["content"]
            == document["copy_strat_agents"][0]["tagged_chat_history"][-1][0]["content"]
        )
        assert row["garbled"] is False

    def test_cross_run_strategy_pairs(self, data_file, tmp_path, ingest_with_stand_ins):
        dataset = ingest_with_stand_ins(tmp_path / "d", [data_file("v4_kib.json")])
        report = export_dataset(
            str(dataset), str(tmp_path / "o"), ExportSettings(eval_share=0, cross_run_pairs=True)
        )
        (row,) = [
            r
            for r in _rows(tmp_path / "o" / "dpo" / "train.jsonl")
            if r["rule"] == "cross_run_strat"
        ]
        assert report.pairs_by_rule["cross_run_strat"] == 1
        assert (
            row["chosen"][0]["content"] == "Remove rotated logs in /var/log"
        )  # the run that freed most
        assert (
            row["rejected"][0]["content"] == "Delete core dumps in /var/crash"
        )  # the never_freed run
        assert row["prompt"][-1]["content"] == "List strategies to free up storage space."
