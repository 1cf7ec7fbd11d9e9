"""The synthetic v5 corpus, and ingest held to its ground truth (chains, losses, quarantine)."""

from __future__ import annotations

import copy
import hashlib
import json
from pathlib import Path

import orjson
import polars as pl
import pytest

from agir_retrain.tasks.dataset.export import export_dataset
from agir_retrain.tasks.runs.formats.registry import format_named
from agir_retrain.tasks.runs.formats.v5.format import ChainStep
from agir_retrain.tasks.runs.formats.v5.record_parts import write_part
from agir_retrain.tasks.runs.ingest import ingest, ingest_post_shard
from agir_retrain.tasks.runs.reader import ReadLimits, read_run_file
from agir_retrain.tasks.settings.models import ExportSettings
from agir_retrain.tasks.synth import text
from agir_retrain.tasks.synth.v5 import write_mixed_corpus, write_v5_corpus

TOTALS = (
    "files_in", "files_read", "files_quarantined", "runs_in", "runs_quarantined", "runs_by_class",
    "quarantine_reasons", "v5_records", "attempts_missing", "chains_by_attempts_missing",
)  # fmt: skip


def _nonzero(counts: dict) -> dict:
    return {k: v for k, v in counts.items() if v}


def _ingest(corpus: Path, out: Path, shard_bytes: int = 1 << 18, workers: int = 1) -> dict:
    report = ingest(
        [str(corpus / "runs")], str(out), limits=ReadLimits(), shard_bytes=shard_bytes,
        workers=workers,
    )  # fmt: skip
    return report.to_dict()


@pytest.fixture(scope="module")
def corpus(tmp_path_factory) -> Path:
    root = tmp_path_factory.mktemp("v5corpus")
    write_v5_corpus(root, runs=240, seed=3)
    return root


def test_same_seed_same_bytes(tmp_path):
    def snapshot(root: Path) -> str:
        digest = hashlib.sha256()
        for path in sorted(root.rglob("*.json")):
            digest.update(path.name.encode() + path.read_bytes())
        return digest.hexdigest()

    write_v5_corpus(tmp_path / "a", runs=30, seed=5)
    write_v5_corpus(tmp_path / "b", runs=30, seed=5)
    write_v5_corpus(tmp_path / "c", runs=30, seed=6)
    assert snapshot(tmp_path / "a") == snapshot(tmp_path / "b") != snapshot(tmp_path / "c")


def test_corpus_is_upstream_shaped_and_lossy(corpus):
    truth = json.loads((corpus / "ground_truth.json").read_text())
    names = [f["name"] for f in truth["files"]]
    assert all(n.startswith("d8c344-v5-0_") and n.endswith(".json") for n in names)
    code = next(corpus / "runs" / f["name"] for f in truth["files"] if f["type"] == "strategy_code")
    text = code.read_text()
    assert text.startswith('{\n    "run_id": ')  # json.dump(indent=4), keys in the writer's order
    assert set(json.loads(text)) >= {"this_code_space_change_kb", "run_result_if_err"}
    totals = truth["totals"]
    assert all(totals["runs_by_class"][c] > 0 for c in totals["runs_by_class"])
    assert totals["attempts_missing"] > 0
    reasons = {c["reason"] for c in truth["chains"]}
    assert {
        "attempts_missing",
        "duplicate_attempt_numbers",
        "multiple_runnable_attempts",
        "attempt_after_runnable",
    } <= reasons


@pytest.mark.slow
def test_ingest_matches_ground_truth(corpus, tmp_path):
    report = _ingest(corpus, tmp_path / "out", workers=2)
    truth = json.loads((corpus / "ground_truth.json").read_text())
    for key in TOTALS:
        assert report[key] == truth["totals"][key], key
    assert _nonzero(report["pairs_by_rule"]) == truth["totals"]["pairs_by_rule"]
    runs = pl.read_parquet(tmp_path / "out" / "runs.parquet")
    got = {
        row["run_id"]: (str(row["run_class"]), row["class_reason"], row["attempts_missing"])
        for row in runs.iter_rows(named=True)
    }
    expected = {
        c["run_id"]: (c["class"], c["reason"], c["attempts_missing"]) for c in truth["chains"]
    }
    assert got == expected  # every chain, by its run id, in the class the spec gives it


@pytest.mark.slow
def test_chains_do_not_depend_on_sharding(corpus, tmp_path):
    """Chains span shards: one file a shard, or the whole corpus in one, gives the same runs."""
    one_per_file = _ingest(corpus, tmp_path / "small", shard_bytes=1)
    one_shard = _ingest(corpus, tmp_path / "big", shard_bytes=1 << 30)
    assert one_per_file == one_shard

    def table(out: Path, name: str) -> pl.DataFrame:
        return pl.read_parquet(out / name).sort(pl.all())

    for name in ("runs.parquet", "scored.parquet", "pairs.parquet"):
        assert table(tmp_path / "small", name).equals(table(tmp_path / "big", name)), name


def test_hash_ranges_do_not_change_chains(corpus, tmp_path):
    """Chains formed a few records at a time equal chains formed all at once."""
    records = [
        record
        for path in sorted((corpus / "runs").iterdir())
        for record in read_run_file(str(path)).pending
    ]
    write_part(records[: len(records) // 2], tmp_path / "a.parquet")
    write_part(records[len(records) // 2 :], tmp_path / "b.parquet")
    parts = [str(tmp_path / "a.parquet"), str(tmp_path / "b.parquet")]
    v5 = format_named("v5")
    whole = ingest_post_shard(v5, parts, str(tmp_path / "whole"))
    v5_few_at_a_time = copy.copy(v5)
    v5_few_at_a_time.post_shard = ChainStep(range_bytes=4096)
    ranged = ingest_post_shard(v5_few_at_a_time, parts, str(tmp_path / "ranged"))
    assert whole.to_dict() == ranged.to_dict()
    first = pl.read_parquet(tmp_path / "whole" / "runs.parquet")
    assert first.equals(pl.read_parquet(tmp_path / "ranged" / "runs.parquet"))
    assert first.get_column("run_id").is_unique().all()


def test_mixed_corpus_builds_one_dataset(tmp_path):
    write_mixed_corpus(tmp_path / "c", runs=80, seed=2)
    truth = json.loads((tmp_path / "c" / "ground_truth.json").read_text())
    report = _ingest(tmp_path / "c", tmp_path / "out", workers=2)
    for key in ("files_in", "files_read", "files_quarantined", "runs_in", "runs_quarantined",
                "runs_by_class", "v5_records", "attempts_missing"):  # fmt: skip
        assert report[key] == truth["totals"][key], key
    assert report["file_schemas"]["v5"] == truth["v5"]["totals"]["runs_in"]
    assert report["file_schemas"]["v4"] > 0
    export = export_dataset(str(tmp_path / "out"), str(tmp_path / "out"), ExportSettings())
    assert export.kto_rows > 0
    rows = [
        orjson.loads(line)
        for name in ("dpo/train.jsonl", "dpo/eval.jsonl")
        for line in (tmp_path / "out" / name).read_bytes().splitlines()
    ]
    v5_rows = [r for r in rows if "#" in r["run_id"] and r["run_id"].startswith("d8c344-v5-0_")]
    assert v5_rows, "no v5 pair reached the DPO files"
    assert any(not r["run_id"].startswith("d8c344-v5-0_") for r in rows)
    for row in v5_rows:  # mixed pairs: P_c is the chain's first attempt prompt, a code request
        assert row["rule"] == "mixed"
        assert row["prompt"][0]["role"] == "system"
        assert "generate Python code" in row["prompt"][1]["content"]
        assert row["chosen"][0]["content"] != row["rejected"][0]["content"]
    kto = [
        orjson.loads(x) for x in (tmp_path / "out" / "kto/train.jsonl").read_bytes().splitlines()
    ]
    strat_rows = [
        r for r in kto if r["run_id"].startswith("d8c344-v5-0_") and r["prompt_kind"] == "strategy"
    ]
    assert strat_rows, "no v5 strategy row in KTO"
    # P_s is the strategy list's prompt (or the env-getter prompt, for attempts that never ran)
    assert any(r["prompt"][-1]["content"] == text.STRATS_REQUEST for r in strat_rows)
    assert all(r["prompt"] for r in strat_rows)
