"""The report's files: episodes.parquet with the contract's schema, eval.json, eval.md, eval.png."""

from __future__ import annotations

import base64
from pathlib import Path

import orjson
import polars as pl
import pytest

from agir_retrain.tasks.environment.contract import EPISODE_SCHEMA, Episode, StoppedBy
from agir_retrain.tasks.evaluation.metrics import compute_report
from agir_retrain.tasks.evaluation.report import (
    episodes_frame,
    read_episodes,
    write_report,
)
from agir_retrain.tasks.rendering import png_data_uri


def episodes() -> list[Episode]:
    common = {"junk_bytes_total": 4000, "new_bytes": 0, "seconds": 0.5, "stderr_tail": ""}
    return [
        Episode(
            task_id="t0", model="m", sample=0, code_found=True, exit_code=0, stopped_by=None,
            junk_bytes_freed=1000, protected_damaged=(), freed_share=0.25, success=True,
            stdout_tail="freed", scenario="tiny", backend="bwrap", **common,
        ),
        Episode(
            task_id="t1", model="m", sample=0, code_found=True, exit_code=137,
            stopped_by=StoppedBy.TIMEOUT, junk_bytes_freed=0, protected_damaged=("/etc/a",),
            freed_share=0.0, success=False, stdout_tail="", **common,
        ),
        Episode(
            task_id="t1", model="n", sample=0, code_found=False, exit_code=None, stopped_by=None,
            junk_bytes_freed=0, freed_share=0.0, success=False, stdout_tail="", **common,
        ),
    ]  # fmt: skip


def test_episodes_frame_has_the_contract_schema() -> None:
    frame = episodes_frame(episodes())
    assert frame.schema == EPISODE_SCHEMA
    assert frame["stopped_by"].to_list() == [None, "timeout", None]
    assert frame["protected_damaged"].to_list() == [[], ["/etc/a"], []]
    assert frame["exit_code"].to_list() == [0, 137, None]
    assert episodes_frame([]).schema == EPISODE_SCHEMA


def test_report_files_are_written_and_byte_identical_on_rerun(tmp_path: Path) -> None:
    rows = episodes()
    report = compute_report(episodes_frame(rows), seed=0)
    outputs = []
    for name in ("a", "b"):
        png = write_report(str(tmp_path / name), rows, report)
        folder = tmp_path / name
        assert sorted(p.name for p in folder.iterdir()) == [
            "episodes.parquet",
            "eval.json",
            "eval.md",
            "eval.png",
        ]  # fmt: skip (no temporary file left behind)
        assert png == (folder / "eval.png").read_bytes()
        outputs.append({p.name: p.read_bytes() for p in folder.iterdir()})
    assert outputs[0] == outputs[1]
    frame = read_episodes(str(tmp_path / "a" / "episodes.parquet"))
    assert frame.equals(episodes_frame(rows))
    doc = orjson.loads(outputs[0]["eval.json"])
    assert doc["models"]["m"]["pass_at_1"]["value"] == 0.5
    assert "![pass@1 and freed share](eval.png)" in outputs[0]["eval.md"].decode()


def test_png_data_uri_round_trips(tmp_path: Path) -> None:
    png = write_report(str(tmp_path), episodes(), compute_report(episodes_frame(episodes())))
    uri = png_data_uri(png)
    assert uri.startswith("data:image/png;base64,")
    assert base64.b64decode(uri.split(",", 1)[1]) == png


def test_reading_a_foreign_table_fails(tmp_path: Path) -> None:
    pl.DataFrame({"task_id": ["x"]}).write_parquet(tmp_path / "e.parquet")
    with pytest.raises(ValueError, match="EPISODE_SCHEMA"):
        read_episodes(str(tmp_path / "e.parquet"))
