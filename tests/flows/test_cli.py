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
def test_demo_runs_the_whole_job(tmp_path, tiny_model, monkeypatch, prefect_server, local_ray):
    # On the session's Prefect server and Ray: the embedded server is tested by the next
    # tests and by tests/flows/test_prefect_database.py, a Ray of a flow's own by them too.
    monkeypatch.setenv("AGIR_CACHE_DIR", str(tmp_path / "cache"))
    result = runner.invoke(
        app, ["demo", "--out", str(tmp_path / "demo"), "--runs", "30"], terminal_width=200
    )
    assert result.exit_code == 0, result.output
    assert "archive (verified)" in result.output
    assert list((tmp_path / "demo" / "archives").glob("agir-adapter-*.tar.gz"))


def _last_line(result) -> str:
    return result.output.strip().splitlines()[-1]


class TestUserErrorsEndInOneLine:
    """Each user error: exit status 2, one readable line last, no traceback."""

    def _check(self, result, *expected: str) -> None:
        assert result.exit_code == 2, result.output
        assert "Traceback" not in result.output
        assert _last_line(result).startswith("error: ")
        for text in expected:
            assert text in _last_line(result), result.output

    def test_an_out_that_is_a_file(self, tmp_path, data_file):
        (tmp_path / "out").write_text("")
        result = runner.invoke(
            app, ["ingest", data_file("v4_kib.json"), "--out", str(tmp_path / "out")]
        )
        self._check(result, "is a file")

    def test_a_yaml_error_in_set(self, data_file):
        result = runner.invoke(app, ["ingest", data_file("v4_kib.json"), "--set", "workers=[1"])
        self._check(result, "--set workers", "not valid YAML")

    def test_set_without_equals(self, data_file):
        result = runner.invoke(app, ["ingest", data_file("v4_kib.json"), "--set", "workers"])
        self._check(result, "key=value")

    def test_a_folder_passed_to_verify(self, tmp_path):
        self._check(runner.invoke(app, ["verify", str(tmp_path)]), str(tmp_path))

    def test_an_unknown_agir_variable(self, data_file, tmp_path):
        result = runner.invoke(
            app,
            ["ingest", data_file("v4_kib.json"), "--out", str(tmp_path / "o")],
            env={"AGIR_WORKERZ": "1"},
        )
        assert result.exit_code == 2
        assert "AGIR_WORKERZ (from env): names no setting of any command" in result.output

    def test_another_commands_agir_variable_is_left_to_it(self, data_file, tmp_path):
        result = runner.invoke(
            app,
            ["ingest", data_file("v4_kib.json"), "--out", str(tmp_path / "o"), "--workers", "1"],
            env={"AGIR_BASE_MODEL": "org/model"},
        )
        assert result.exit_code == 0, result.output

    def test_names_with_markup_are_printed_as_they_are(self, tmp_path):
        missing = str(tmp_path / "[/red]runs[bold]")  # rich's MarkupError, before
        result = runner.invoke(app, ["ingest", missing, "--out", str(tmp_path / "o")])
        self._check(result, "[/red]runs[bold]")

    def test_terminal_escapes_in_names_are_shown_not_sent(self, tmp_path, data_file):
        out = tmp_path / "\x1b[2Jout\x07"  # would clear the screen and ring the bell
        out.write_text("")
        result = runner.invoke(app, ["ingest", data_file("v4_kib.json"), "--out", str(out)])
        self._check(result, "\\x1b[2Jout\\x07")
        assert "\x1b" not in result.output
        assert "\x07" not in result.output


@pytest.mark.timeout(300)
def test_sigterm_mid_ingest_leaves_no_temporary_folder(tmp_path):
    import os
    import signal
    import subprocess
    import sys
    import time

    from agir_retrain.tasks.synth.corpus import write_corpus

    write_corpus(tmp_path / "corpus", runs=400, seed=2, env_kib=64)
    scratch = tmp_path / "tmp"
    scratch.mkdir()
    process = subprocess.Popen(
        [sys.executable, "-m", "agir_retrain.flows.cli", "ingest", str(tmp_path / "corpus" / "runs"),
         "--out", str(tmp_path / "out"), "--workers", "2", "--shard-bytes", "100000"],
        env=os.environ | {"TMPDIR": str(scratch)}, stderr=subprocess.PIPE,
    )  # fmt: skip
    deadline = time.monotonic() + 240
    while not list(scratch.glob("agir-ingest-*/shard-*")) and time.monotonic() < deadline:
        assert process.poll() is None, process.stderr.read().decode()
        time.sleep(0.05)
    process.send_signal(signal.SIGTERM)
    assert process.wait(timeout=120) == 128 + signal.SIGTERM
    assert list(scratch.iterdir()) == []
    assert [p.name for p in tmp_path.iterdir() if p.name.startswith(".out")] in ([], [".out.lock"])
    assert not (tmp_path / "out").exists()


@pytest.mark.slow
@pytest.mark.integration
@pytest.mark.timeout(600)
def test_a_failed_flow_ends_with_its_cause(tmp_path, prefect_server):
    # prefect_server: the embedded server it starts opens the session's PREFECT_HOME, whose
    # database is already migrated.
    """Before: the output ended with Prefect's "Error logging to API", the server being gone."""
    import subprocess
    import sys

    from agir_retrain.tasks.synth.corpus import write_corpus

    write_corpus(tmp_path / "corpus", runs=20, seed=0)
    missing = tmp_path / "no-such-model"
    process = subprocess.run(
        [sys.executable, "-m", "agir_retrain.flows.cli", "dataset", str(tmp_path / "corpus" / "runs"),
         "--out", str(tmp_path / "out"), "--base-model", str(missing)],
        stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True, timeout=540,
    )  # fmt: skip
    output = process.stdout  # both streams, in the order a terminal shows them
    assert process.returncode in (1, 2), output
    assert "Error logging to API" not in output
    last = output.strip().splitlines()[-1]
    assert last.startswith("error: "), output[-3000:]
    assert str(missing) in last  # the cause raised on a Ray actor, unwrapped to one line
    assert "OSError" in last
