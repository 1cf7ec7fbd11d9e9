"""The synthetic corpus is deterministic and covers every class and quirk."""

from __future__ import annotations

import json

from agir_retrain.tasks.records import QuarantineReason, RunClass
from agir_retrain.tasks.synth.corpus import write_corpus


def _snapshot(folder):
    return {
        p.relative_to(folder).as_posix(): p.read_bytes()
        for p in sorted(folder.rglob("*"))
        if p.is_file()
    }


def test_same_seed_same_bytes(tmp_path):
    write_corpus(tmp_path / "a", runs=40, seed=7)
    write_corpus(tmp_path / "b", runs=40, seed=7)
    write_corpus(tmp_path / "c", runs=40, seed=8)
    assert _snapshot(tmp_path / "a") == _snapshot(tmp_path / "b")
    assert _snapshot(tmp_path / "a") != _snapshot(tmp_path / "c")


def test_covers_every_class_and_quarantine_reason(tmp_path):
    truth = write_corpus(tmp_path, runs=200, seed=1)
    totals = json.loads((tmp_path / "ground_truth.json").read_text())["totals"]
    assert truth.runs == totals["runs_in"] == 200
    assert all(totals["runs_by_class"][c.value] > 0 for c in RunClass)
    expected_reasons = {r.value for r in QuarantineReason} - {
        "read_error", "file_too_large", "message_too_large", "unexpected_error", "shard_failed",
        "bad_attempt_number",  # v5 records only: the v5 corpus has it (tests/synth/test_v5.py)
        # What the filesystem holds, not the bytes: tests/test_inputs.py, tests/runs/test_ingest.py.
        "not_a_regular_file", "broken_link", "duplicate_file",
    }  # fmt: skip
    assert set(totals["quarantine_reasons"]) == expected_reasons
    assert totals["pairs_skipped_identical"] > 0
    assert not any((tmp_path / "runs").glob("ground_truth*"))
