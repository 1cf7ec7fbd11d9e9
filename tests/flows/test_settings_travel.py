"""A setting travels once: from a flag to TRL's config in three named steps; each flag declared once.

flags, --set, AGIR_*, --config  --load_config-->  TrainConfig                      (1)
TrainConfig  --write_config / read_job_config-->  the same TrainConfig in the job  (2)
TrainConfig  --objective.trl_config-->            GRPOConfig's keyword arguments   (3)
"""

from __future__ import annotations

import pytest
from pydantic import Field
from typer.testing import CliRunner

from agir_retrain.flows.cli import COMMANDS
from agir_retrain.flows.cli_commands import Flag, SettingsCommand, register
from agir_retrain.flows.cli_train import TRAIN
from agir_retrain.tasks.objectives import objective
from agir_retrain.tasks.settings.base import Section
from agir_retrain.tasks.settings.loader import field_description
from agir_retrain.tasks.settings.train import TrainConfig
from agir_retrain.tasks.training.outputs import write_config
from agir_retrain.tasks.training.program import parse, read_job_config

SHARED = {"on_gpu": False, "bf16": False, "gradient_checkpointing": False}


def test_train_objective_grpo_reaches_grpos_config_in_three_steps(tmp_path, monkeypatch):
    monkeypatch.setenv("AGIR_GRPO__TEMPERATURE", "0.7")
    given = {flag.parameter: None for flag in TRAIN.flags}  # what typer passes: None, not given
    given |= {"dataset": ["data"], "objective": "grpo", "max_steps": 3}
    settings = TRAIN.load(None, given, ["grpo.num_generations=4"])  # (1)
    assert isinstance(settings, TrainConfig)
    path = write_config(settings, tmp_path / "train_config.yaml")
    in_the_job = read_job_config(path)  # (2)
    assert in_the_job == settings
    arguments = objective(in_the_job.objective).trl_config(in_the_job, **SHARED)  # (3)
    assert (arguments["max_steps"], arguments["num_generations"]) == (3, 4)
    assert arguments["temperature"] == 0.7
    assert arguments["per_device_train_batch_size"] == 4  # 1 prompt x 4 generations


def test_the_job_reads_its_file_as_written_not_the_environment_again(tmp_path, monkeypatch):
    """The submitter rewrote ``out`` for this job; a variable must not undo it in the job."""
    path = write_config(TrainConfig(out=str(tmp_path / "staging")), tmp_path / "job.yaml")
    monkeypatch.setenv("AGIR_OUT", "s3://bucket/elsewhere")
    assert read_job_config(path).out == str(tmp_path / "staging")
    assert parse(["--config", str(path), "--set", "lora.r=8"]).lora.r == 8
    with pytest.raises(SystemExit, match=r"lora\.rr \(from flag\): unknown setting"):
        parse(["--config", str(path), "--set", "lora.rr=8"])


@pytest.mark.parametrize(
    "command", [c for c in COMMANDS if isinstance(c, SettingsCommand)], ids=lambda c: c.name
)
def test_each_flag_names_one_setting_and_takes_its_help_from_it(command):
    keys = set()
    for flag in command.flags:
        assert flag.key not in keys, f"{command.name}: {flag.key} has two flags"
        keys.add(flag.key)
        described = field_description(command.settings, flag.key)  # the setting exists
        if flag.help is None:
            assert described, f"{command.name}: {flag.key} has no help text"


def test_a_new_command_is_a_settings_model_a_run_and_one_registration(tmp_path, monkeypatch):
    """What `collect` or `improve` will be: the flags, config file, AGIR_* and --set for free."""
    import typer

    class EchoConfig(Section):
        """Settings of a command made here."""

        words: list[str] = Field(default_factory=list, description="Words to say.")
        times: int = Field(1, ge=1, description="How often to say them.")
        loud: bool = Field(False, description="Say them loudly.")

    said: list[EchoConfig] = []
    echo = SettingsCommand(
        name="echo",
        settings=EchoConfig,
        flags=(Flag(key="words", argument=True), Flag(key="times"), Flag(key="loud")),
        run=said.append,
        help="Say words.",
    )
    app = typer.Typer()
    register(app, echo)
    app.command("other")(lambda: None)  # a group, so the command is addressed by name
    (tmp_path / "echo.yaml").write_text("times: 2\n")
    monkeypatch.setenv("AGIR_LOUD", "true")
    runner = CliRunner()
    result = runner.invoke(app, ["echo", "hi", "there", "--config", str(tmp_path / "echo.yaml")])
    assert result.exit_code == 0, result.output
    assert said == [EchoConfig(words=["hi", "there"], times=2, loud=True)]
    result = runner.invoke(app, ["echo", "hi", "--times", "0"])
    assert result.exit_code == 2
    assert "times (from flag): Input should be greater than or equal to 1" in result.output
    help_text = runner.invoke(app, ["echo", "--help"], terminal_width=200).output
    assert "How often to say them." in help_text  # the field's description is the flag's help
