"""The build's post-shard step for v5: chains from every shard, garbled and assembled like a
shard, cached."""

from __future__ import annotations

import json
from pathlib import Path

import orjson
import pytest

from agir_retrain.tasks.dataset.build import (
    assemble_dataset,
    build_shard,
    pending_garble_requests,
    plan_dataset,
    save_garbled,
)
from agir_retrain.tasks.dataset.garble import corrupt
from agir_retrain.tasks.dataset.post_shard import build_post_shard
from agir_retrain.tasks.records import GarbleMethod, GarbleResult
from agir_retrain.tasks.runs.formats.registry import format_named
from agir_retrain.tasks.settings.models import ExportSettings, ReadSettings
from agir_retrain.tasks.synth.v5 import write_mixed_corpus

KEY = "test-garble-key"


def _build(corpus: Path, work: Path, out: Path):
    read = ReadSettings()
    # Small shards: a chain's records land in several of them.
    planned = plan_dataset([str(corpus / "runs")], str(work), 1 << 16, read)
    manifests = [build_shard(p, read) for p in planned]
    chains = build_post_shard(format_named("v5"), manifests, str(work))
    assert chains is not None
    manifests.append(chains)
    requests, owner = pending_garble_requests(manifests, KEY)
    # Model-free rejected sides (the garbling stage's own fallback), so no model is needed.
    save_garbled(
        [
            GarbleResult(
                run_id=r.run_id,
                prompt_kind=r.prompt_kind,
                rejected=corrupt(r.chosen, 0),
                garble_method=GarbleMethod.FALLBACK,
                draws=0,
                seed=0,
                new_tokens=0,
            )
            for r in requests
        ],
        owner,
        KEY,
    )
    report, export = assemble_dataset(manifests, str(out), str(work), KEY, ExportSettings())
    return len(planned), chains, report, export


@pytest.mark.slow
def test_mixed_corpus_through_the_build(tmp_path):
    write_mixed_corpus(tmp_path / "c", runs=60, seed=4)
    truth = json.loads((tmp_path / "c" / "ground_truth.json").read_text())["totals"]
    shards, chains, report, export = _build(tmp_path / "c", tmp_path / "work", tmp_path / "out")
    assert shards > 1
    assert (
        chains.runs
        == json.loads((tmp_path / "c" / "ground_truth.json").read_text())["v5"]["totals"]["runs_in"]
    )
    for key in ("files_in", "files_read", "files_quarantined", "runs_in", "runs_by_class"):
        assert report.to_dict()[key] == truth[key], key
    report.check_balance()
    assert export.unfilled_pairs_dropped == 0
    rows = [
        orjson.loads(line)
        for name in ("dpo/train.jsonl", "dpo/eval.jsonl")
        for line in (tmp_path / "out" / name).read_bytes().splitlines()
    ]
    rules = {r["rule"] for r in rows if r["run_id"].startswith("d8c344-v5-0_")}
    assert rules == {"mixed", "first_try_strat", "first_try_code"}  # v5 pairs, garbled included

    # A rerun reuses the chains folder (content-addressed by the shards holding v5 records).
    _, again, rerun, _ = _build(tmp_path / "c", tmp_path / "work", tmp_path / "out2")
    assert again.cached
    assert again.directory == chains.directory
    assert rerun.to_dict() == report.to_dict()
