"""The SFT files: the records that freed space, as prompt-completion rows, split by run."""

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
    root = tmp_path_factory.mktemp("export-sft")
    write_corpus(root / "corpus", runs=120, seed=8)
    return ingest_with_stand_ins(root / "dataset", [str(root / "corpus" / "runs")])


@pytest.fixture(scope="module")
def exported(synthetic, tmp_path_factory) -> tuple[Path, object]:
    out = tmp_path_factory.mktemp("sft-out")
    report = export_dataset(str(synthetic), str(out), ExportSettings(eval_share=0.3))
    return out, report


def test_rows_are_the_successful_records_of_consistent_runs(synthetic, exported):
    out, report = exported
    rows = _rows(out / "sft" / "train.jsonl") + _rows(out / "sft" / "eval.jsonl")
    scored = pl.read_parquet(synthetic / "scored.parquet")
    runs = pl.read_parquet(synthetic / "runs.parquet").select("run_id", "run_class")
    expected = (
        scored.filter(pl.col("score_bytes") > 0)
        .join(runs, on="run_id")
        .filter(pl.col("run_class").cast(pl.String) != "inconsistent")
    )
    assert expected.height > 0
    # Each success gives (P_c, code) and (P_s, strat): both kinds are there, and nothing else.
    assert {r["prompt_kind"] for r in rows} == {"code", "strategy"}
    assert len(rows) == report.sft_train_rows + report.sft_eval_rows
    assert len(rows) <= expected.height  # identical (prompt, completion) rows are written once
    assert {(r["run_id"], r["prompt_kind"]) for r in rows} <= {
        (r, str(k)) for r, k in expected.select("run_id", "prompt_kind").iter_rows()
    }
    assert all(r["score"] > 0 for r in rows)


def test_prompt_completion_format_with_the_loss_on_the_assistant_turn(exported):
    out, _ = exported
    row = next(r for r in _rows(out / "sft" / "train.jsonl") if r["prompt_kind"] == "code")
    assert list(row) == [
        "prompt", "completion", "score", "prompt_kind", "response_kind", "run_id", "source"
    ]  # fmt: skip
    assert row["prompt"][0]["role"] == "system"
    assert row["prompt"][-1]["role"] == "user"
    assert "generate Python code" in row["prompt"][-1]["content"]
    assert [m["role"] for m in row["completion"]] == ["assistant"]
    assert "```python" in row["completion"][0]["content"]


def test_split_is_by_run_with_the_dpo_seed(exported):
    out, _ = exported
    train = {r["run_id"] for r in _rows(out / "sft" / "train.jsonl")}
    evaluation = {r["run_id"] for r in _rows(out / "sft" / "eval.jsonl")}
    assert train
    assert evaluation
    assert not train & evaluation
    assert all(split_of(r, 0, 0.3) == "eval" for r in evaluation)


def test_off_when_asked(synthetic, tmp_path):
    report = export_dataset(str(synthetic), str(tmp_path), ExportSettings(sft=False))
    assert not (tmp_path / "sft").exists()
    assert report.sft_train_rows == 0
