"""The command line: synth then ingest, with a summary and clear errors."""

from __future__ import annotations

import json

from typer.testing import CliRunner

from flows.cli import app

runner = CliRunner()


def test_synth_then_ingest(tmp_path):
    result = runner.invoke(
        app, ["synth", "--out", str(tmp_path / "c"), "--runs", "30", "--seed", "3"]
    )
    assert result.exit_code == 0, result.output
    result = runner.invoke(
        app,
        ["ingest", str(tmp_path / "c" / "runs"), "--out", str(tmp_path / "o"), "--workers", "1"],
    )
    assert result.exit_code == 0, result.output
    report = json.loads((tmp_path / "o" / "report.json").read_text())
    assert report["runs_in"] == 30
    assert "runs in / quarantined" in result.output


def test_settings_from_set_and_env(tmp_path, data_file):
    result = runner.invoke(
        app,
        [
            "ingest",
            data_file("v4_kib.json"),
            "--out",
            str(tmp_path),
            "--set",
            "read.max_message_chars=100",
        ],
        env={"AGIR_WORKERS": "1"},
    )
    assert result.exit_code == 0, result.output
    report = json.loads((tmp_path / "report.json").read_text())
    assert report["quarantine_reasons"] == {"message_too_large": 4}


def test_missing_input_exits_2_with_a_message(tmp_path):
    result = runner.invoke(app, ["ingest", str(tmp_path / "none"), "--out", str(tmp_path / "o")])
    assert result.exit_code == 2
    assert "no run files" in result.output


def test_bad_setting_exits_2_naming_it(tmp_path, data_file):
    result = runner.invoke(
        app, ["ingest", data_file("v4_kib.json"), "--set", "read.max_file_byte=1"]
    )
    assert result.exit_code == 2
    assert "read.max_file_byte" in result.output
