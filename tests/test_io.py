"""Outputs as a set: a command's files replace the old ones together, or not at all."""

from __future__ import annotations

import fcntl
import json
import subprocess
import sys
import time
from pathlib import Path

import polars as pl
import pytest

from agir_retrain.tasks.errors import ConfigError
from agir_retrain.tasks.io import output_set
from agir_retrain.tasks.runs.ingest import ingest
from agir_retrain.tasks.runs.reader import ReadLimits
from agir_retrain.tasks.synth.corpus import write_corpus


def _ingest(inputs: Path, out: Path) -> None:
    ingest([str(inputs)], str(out), limits=ReadLimits(), shard_bytes=1 << 16, workers=1)


def _consistent(out: Path) -> dict:
    """The report of ``out``, checked against its tables and quarantine lines."""
    report = json.loads((out / "report.json").read_text())
    runs = pl.read_parquet(out / "runs.parquet").height
    assert runs == sum(report["runs_by_class"].values())
    quarantined = len((out / "quarantine.jsonl").read_bytes().splitlines())
    assert quarantined == sum(report["quarantine_reasons"].values())
    return report


@pytest.fixture(scope="module")
def corpora(tmp_path_factory) -> tuple[Path, Path]:
    root = tmp_path_factory.mktemp("corpora")
    write_corpus(root / "small", runs=20, seed=1)
    write_corpus(root / "large", runs=60, seed=2)
    return root / "small" / "runs", root / "large" / "runs"


class TestOutputSet:
    def test_a_failure_before_the_swap_leaves_the_old_set_whole(
        self, corpora, tmp_path, monkeypatch
    ):
        small, large = corpora
        out = tmp_path / "out"
        _ingest(small, out)
        before = {p.name: p.read_bytes() for p in out.iterdir()}
        import agir_retrain.tasks.runs.gather as gather

        def fail(*_args, **_kwargs):
            raise OSError("disk full")

        # The report is the last file written: before, the new tables were already in place.
        monkeypatch.setattr(gather, "write_json_atomic", fail)
        with pytest.raises(OSError, match="disk full"):
            _ingest(large, out)
        assert {p.name: p.read_bytes() for p in out.iterdir()} == before
        assert not [p for p in tmp_path.iterdir() if p.name.startswith(".out.new-")]

    def test_files_the_set_does_not_replace_stay(self, corpora, tmp_path):
        out = tmp_path / "out"
        out.mkdir()
        (out / "notes.txt").write_text("mine")
        _ingest(corpora[0], out)
        assert (out / "notes.txt").read_text() == "mine"
        _consistent(out)

    def test_a_swap_cut_short_is_completed_by_the_next(self, tmp_path):
        out = tmp_path / "out"
        aside = tmp_path / ".out.old-x"  # killed after renaming out aside: out is missing
        aside.mkdir()
        (aside / "keep.txt").write_text("old")
        with output_set(str(out)) as staged:
            Path(staged, "new.txt").write_text("new")
        assert sorted(p.name for p in out.iterdir()) == ["keep.txt", "new.txt"]
        assert not aside.exists()

    def test_an_out_that_is_a_file_is_refused(self, tmp_path):
        (tmp_path / "out").write_text("")
        with pytest.raises(ConfigError, match="is a file"), output_set(str(tmp_path / "out")):
            pass

    @pytest.mark.timeout(300)
    def test_a_swap_waits_for_the_lock_then_lands_whole(self, corpora, tmp_path):
        small, large = corpora
        out = tmp_path / "out"
        _ingest(small, out)
        small_report = (out / "report.json").read_bytes()
        with open(tmp_path / ".out.lock", "a+b") as lock:
            fcntl.flock(lock.fileno(), fcntl.LOCK_EX)  # another command is swapping
            process = subprocess.Popen(
                [sys.executable, "-m", "agir_retrain.flows.cli", "ingest", str(large),
                 "--out", str(out), "--workers", "1"],
                stdout=subprocess.DEVNULL, stderr=subprocess.PIPE,
            )  # fmt: skip
            try:
                staged = _wait_for(lambda: _finished_staging(tmp_path), 240)
                time.sleep(1)
                assert staged, "the ingest never finished writing its staging folder"
                assert process.poll() is None  # waiting for the lock, out untouched
                assert (out / "report.json").read_bytes() == small_report
            finally:
                fcntl.flock(lock.fileno(), fcntl.LOCK_UN)
        assert process.wait(timeout=120) == 0, process.stderr.read().decode()
        assert _consistent(out)["runs_in"] == 60

    @pytest.mark.slow
    @pytest.mark.timeout(600)
    def test_two_ingests_into_one_out_never_mix(self, corpora, tmp_path):
        out = tmp_path / "out"
        for _round in range(3):
            processes = [
                subprocess.Popen(
                    [
                        sys.executable,
                        "-m",
                        "agir_retrain.flows.cli",
                        "ingest",
                        str(corpus),
                        "--out",
                        str(out),
                        "--workers",
                        "1",
                    ],
                    stdout=subprocess.DEVNULL,
                    stderr=subprocess.PIPE,
                )
                for corpus in corpora
            ]
            for process in processes:
                assert process.wait(timeout=300) == 0, process.stderr.read().decode()
            assert _consistent(out)["runs_in"] in (20, 60)


def _finished_staging(folder: Path) -> bool:
    return any((p / "report.json").exists() for p in folder.glob(".out.new-*"))


def _wait_for(condition, seconds: float) -> bool:
    deadline = time.monotonic() + seconds
    while time.monotonic() < deadline:
        if condition():
            return True
        time.sleep(0.2)
    return False


def test_output_set_for_a_url_uploads_every_file(tmp_path):
    import fsspec

    fs = fsspec.filesystem("memory")  # one store for the whole session: a folder of our own
    root = f"/{tmp_path.name}/out"
    with output_set(f"memory://{root}") as staged:
        Path(staged, "report.json").write_text("{}")
        Path(staged, "a.parquet").write_text("a")
    assert sorted(fs.ls(root, detail=False)) == [f"{root}/a.parquet", f"{root}/report.json"]
