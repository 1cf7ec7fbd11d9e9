"""The command line: synth then ingest, with a summary and clear errors."""

from __future__ import annotations

import json

import pytest
from typer.testing import CliRunner

from agir_retrain.flows.cli import app

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


def test_config_show_names_where_each_setting_came_from(tmp_path):
    config_file = tmp_path / "retrain.yaml"
    config_file.write_text("out: from-file\ntrain:\n  dpo:\n    beta: 0.3\n")
    result = runner.invoke(
        app,
        [
            "config",
            "show",
            "retrain",
            "--config",
            str(config_file),
            "--set",
            "build.garble.temperature=1.5",
        ],
        env={"AGIR_BASE_MODEL": "org/model"},
        terminal_width=200,
    )
    assert result.exit_code == 0, result.output
    lines = {
        line.split(" = ")[0].strip(): line for line in result.output.splitlines() if " = " in line
    }
    assert lines["build.garble.temperature"].endswith("= 1.5  # flag")
    assert lines["train.dpo.beta"].endswith(f"= 0.3  # file:{config_file}")
    assert lines["base_model"].endswith('= "org/model"  # env:AGIR_BASE_MODEL')
    assert lines["build.out"].endswith('= "from-file/dataset"  # default')  # derived from out


def test_every_command_has_help():
    for command in ("ingest", "dataset", "train", "retrain", "demo", "synth", "archive", "verify"):
        result = runner.invoke(app, [command, "--help"], terminal_width=200)
        assert result.exit_code == 0, command
        assert "--help" in result.output


@pytest.mark.slow
@pytest.mark.integration
def test_demo_runs_the_whole_job(tmp_path, tiny_model, monkeypatch):
    monkeypatch.setenv("AGIR_CACHE_DIR", str(tmp_path / "cache"))
    result = runner.invoke(
        app, ["demo", "--out", str(tmp_path / "demo"), "--runs", "30"], terminal_width=200
    )
    assert result.exit_code == 0, result.output
    assert "archive (verified)" in result.output
    assert list((tmp_path / "demo" / "archives").glob("agir-adapter-*.tar.gz"))
