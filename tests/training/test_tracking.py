"""Experiment tracking: settings mapped to TRL's arguments, trackers checked, real runs read back."""

from __future__ import annotations

import importlib.util
import json
import os
from pathlib import Path

import pytest
from pydantic import ValidationError

from agir_retrain.tasks.errors import ConfigError
from agir_retrain.tasks.objectives import objectives
from agir_retrain.tasks.settings.models import TrainConfig
from agir_retrain.tasks.settings.tracking import TrackingSettings
from agir_retrain.tasks.training.metrics import TrackedRun, metrics_rows, read_metrics
from agir_retrain.tasks.training.tracking import (
    check_trackers,
    mlflow_uri,
    tracked_runs,
    tracker_environment,
    tracking_session,
    wandb_login_problem,
)

SHARED = {"on_gpu": False, "bf16": False, "gradient_checkpointing": False}


def _arguments(config: TrainConfig) -> dict[str, dict]:
    """Every objective's TRL keyword arguments for one config."""
    rows = [{"label": True}, {"label": True}, {"label": False}, {"label": False}]
    arguments = {
        name: objective.trl_config(config, has_eval=True, train_rows=rows, **SHARED)
        for name, objective in objectives().items()
    }
    assert {"dpo", "sft", "kto", "grpo"} <= set(arguments)
    return arguments


class TestArguments:
    def test_default_reports_to_none(self):
        for name, arguments in _arguments(TrainConfig(out="runs/a")).items():
            assert arguments["report_to"] == "none", name
            assert "run_name" not in arguments, name

    def test_named_trackers_the_run_name_and_the_project_reach_every_objective(self):
        config = TrainConfig(
            out="/data/adapters/gen3", tracking={"report_to": ["tensorboard", "mlflow"]}
        )
        for name, arguments in _arguments(config).items():
            assert arguments["report_to"] == ["tensorboard", "mlflow"], name
            assert arguments["run_name"] == "gen3", name  # the output folder's name
            assert arguments["project"] == "agir-retrain", name
        named = TrainConfig(out="o/", tracking={"report_to": ["trackio"], "run_name": "r1"})
        assert _arguments(named)["dpo"]["run_name"] == "r1"

    @pytest.mark.slow  # importing TRL
    def test_the_arguments_are_accepted_by_trl(self, tmp_path):
        from trl import DPOConfig

        config = TrainConfig(out=str(tmp_path / "o"), tracking={"report_to": ["tensorboard"]})
        args = DPOConfig(**objectives()["dpo"].trl_config(config, has_eval=False, **SHARED))
        assert args.report_to == ["tensorboard"]
        assert args.run_name == "o"
        assert TrainConfig(out=str(tmp_path)).tracking.report_to == []

    def test_unknown_or_repeated_trackers_are_refused(self):
        with pytest.raises(ValidationError, match="report_to"):
            TrackingSettings(report_to=["comet_ml"])
        with pytest.raises(ValidationError, match="mlflow more than once"):
            TrackingSettings(report_to=["mlflow", "mlflow"])


class TestWhere:
    def test_local_trackers_write_inside_out_unless_told(self, tmp_path):
        out = str(tmp_path / "adapter")
        tracking = TrackingSettings(report_to=["tensorboard", "trackio", "wandb", "mlflow"])
        env = tracker_environment(out, tracking)
        assert env == tracker_environment(out, tracking)  # from the settings alone
        assert env["TENSORBOARD_LOGGING_DIR"] == str(tmp_path / "adapter" / "runs" / "adapter")
        assert env["TRACKIO_DIR"] == str(tmp_path / "adapter" / "trackio")
        assert env["WANDB_DIR"] == str(tmp_path / "adapter")
        assert env["WANDB_PROJECT"] == env["MLFLOW_EXPERIMENT_NAME"] == "agir-retrain"
        assert env["MLFLOW_TRACKING_URI"] == f"sqlite:///{tmp_path / 'adapter' / 'mlflow.db'}"
        assert "WANDB_MODE" not in env
        runs = tracked_runs(out, tracking, mlflow_run_id="abc")
        assert [(r.tracker, r.location, r.in_folder) for r in runs] == [
            ("tensorboard", "runs/adapter", True),
            ("trackio", "trackio", True),
            ("wandb", "wandb", True),
            ("mlflow", "mlflow.db", True),
        ]
        assert runs[3].run_id == "abc"
        # MLflow's store: the setting, else the user's MLFLOW_TRACKING_URI, else one in out.
        assert mlflow_uri(out, tracking, "http://user:5000") == "http://user:5000"
        chosen = TrackingSettings(report_to=["mlflow"], mlflow_uri="sqlite:////db/m.db")
        assert mlflow_uri(out, chosen, "http://user:5000") == "sqlite:////db/m.db"
        assert mlflow_uri(out, tracking, None) == env["MLFLOW_TRACKING_URI"]

        elsewhere = TrackingSettings(
            report_to=["tensorboard", "wandb", "mlflow"],
            dir=str(tmp_path / "logs"),
            mlflow_uri="http://mlflow:5000",
            wandb_offline=True,
        )
        env = tracker_environment(out, elsewhere)
        assert env["TENSORBOARD_LOGGING_DIR"] == str(tmp_path / "logs" / "runs" / "adapter")
        assert env["WANDB_MODE"] == "offline"
        assert env["MLFLOW_TRACKING_URI"] == "http://mlflow:5000"
        runs = tracked_runs(out, elsewhere)
        assert [(r.location, r.in_folder) for r in runs] == [
            (str(tmp_path / "logs" / "runs" / "adapter"), False),
            (str(tmp_path / "logs" / "wandb"), False),
            ("http://mlflow:5000", False),
        ]

    def test_the_card_row_says_where_or_not_tracked(self):
        board = TrackedRun(
            tracker="tensorboard", location="runs/a", in_folder=True, project=None, run_name="a"
        )
        store = TrackedRun(
            tracker="mlflow", location="mlflow.db", in_folder=True, project="p", run_name="a",
            run_id="0f3",
        )  # fmt: skip
        from agir_retrain.tasks.training.metrics import tracked_in

        assert tracked_in(board) == (
            "TensorBoard: `runs/a` in this folder (`tensorboard --logdir runs/a`)"
        )
        assert tracked_in(store) == (
            "MLflow: experiment `p`, run `a` (id `0f3`) in the SQLite store `mlflow.db` in this "
            "folder"
        )


@pytest.mark.parametrize("tracker", ["trackio", "wandb"])
def test_a_tracker_not_installed_stops_before_any_model_loads(tracker, dataset, tmp_path):
    if importlib.util.find_spec(tracker) is not None:
        pytest.skip(f"{tracker} is installed")
    from agir_retrain.tasks.training.program import check_data, main

    out = tmp_path / "out"
    # The base model does not exist: loading it first would fail with another error.
    config = TrainConfig(
        dataset=str(dataset),
        base_model=str(tmp_path / "no-such-model"),
        out=str(out),
        tracking={"report_to": [tracker]},
    )
    with pytest.raises(ConfigError, match=rf"{tracker} not installed .*: pip install {tracker},"):
        main(config)
    assert not (out / "adapter_model.safetensors").exists()
    assert not out.exists()  # nothing was written: no tracker started, no model loaded
    with pytest.raises(ConfigError, match=f"pip install {tracker}"):
        check_data(config)  # the program's first step checks too (prepare without main)


@pytest.mark.slow  # MLflow creates its SQLite store's tables
def test_a_run_that_raises_is_failed_in_mlflow_and_the_environment_put_back(tmp_path, monkeypatch):
    mlflow = pytest.importorskip("mlflow")
    monkeypatch.setenv("TENSORBOARD_LOGGING_DIR", "/somewhere/else")
    monkeypatch.delenv("MLFLOW_TRACKING_URI", raising=False)
    out = str(tmp_path / "out")
    tracking = TrackingSettings(report_to=["mlflow", "tensorboard"], run_name="r")
    seen: dict[str, str | None] = {}

    def train_and_fail() -> None:
        with tracking_session(out, tracking) as tracked:
            seen["board"] = os.environ["TENSORBOARD_LOGGING_DIR"]
            seen["run_id"] = tracked[0].run_id
            raise RuntimeError("boom")

    with pytest.raises(RuntimeError, match="boom"):
        train_and_fail()
    assert seen["board"] == str(tmp_path / "out" / "runs" / "r")
    run_id = seen["run_id"]
    assert os.environ["TENSORBOARD_LOGGING_DIR"] == "/somewhere/else"
    assert "MLFLOW_EXPERIMENT_NAME" not in os.environ
    client = mlflow.MlflowClient(tracking_uri=f"sqlite:///{tmp_path / 'out' / 'mlflow.db'}")
    assert client.get_run(run_id).info.status == "FAILED"


class TestWandbLogin:
    def test_online_needs_a_key(self, tmp_path):
        problem = wandb_login_problem({}, netrc_file=str(tmp_path / "none"))
        assert problem is not None
        assert "tracking.wandb_offline=true" in problem
        assert wandb_login_problem({"WANDB_API_KEY": "k"}) is None
        assert wandb_login_problem({"WANDB_MODE": "offline"}) is None

    def test_the_netrc_entry_wandb_login_writes_counts(self, tmp_path):
        netrc_file = tmp_path / "netrc"
        netrc_file.write_text("machine api.wandb.ai\n  login user\n  password k\n")
        netrc_file.chmod(0o600)
        assert wandb_login_problem({}, netrc_file=str(netrc_file)) is None
        # Another host (a private W&B server) needs its own entry.
        other = {"WANDB_BASE_URL": "https://wandb.example.org"}
        assert "wandb.example.org" in wandb_login_problem(other, netrc_file=str(netrc_file))

    def test_offline_runs_need_no_key_but_wandb_itself(self):
        offline = TrackingSettings(report_to=["wandb"], wandb_offline=True)
        if importlib.util.find_spec("wandb") is None:
            with pytest.raises(ConfigError, match="pip install wandb"):
                check_trackers(offline, environ={})
        else:
            check_trackers(offline, environ={})


def _tensorboard_series(folder: Path) -> dict[str, list[tuple[int, float]]]:
    """Every scalar series of the event files in ``folder``, read back by TensorBoard's reader."""
    from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

    series: dict[str, list[tuple[int, float]]] = {}
    for events in sorted(folder.glob("events.out.tfevents.*")):
        accumulator = EventAccumulator(str(events), size_guidance={"scalars": 0})
        accumulator.Reload()
        for tag in accumulator.Tags()["scalars"]:
            series.setdefault(tag, []).extend(
                (event.step, event.value) for event in accumulator.Scalars(tag)
            )
    return series


def _history(metrics, key: str) -> list[tuple[int, float]]:
    return [(row["step"], row[key]) for row in metrics.log_history if key in row]


def _assert_same(logged: list[tuple[int, float]], expected: list[tuple[int, float]]) -> None:
    assert expected, "nothing to compare"
    assert [step for step, _ in logged] == [step for step, _ in expected]
    # TensorBoard keeps scalars as float32.
    assert [value for _, value in logged] == pytest.approx([v for _, v in expected], rel=1e-6)


@pytest.mark.slow
def test_dpo_reports_its_log_history_to_tensorboard_and_mlflow(dataset, tiny_model, tmp_path):
    pytest.importorskip("tensorboard")
    mlflow = pytest.importorskip("mlflow")
    from agir_retrain.tasks.training.program import main

    out = tmp_path / "out"
    config = TrainConfig(
        dataset=str(dataset),
        base_model=tiny_model,
        out=str(out),
        dpo={"max_steps": 2, "batch_size": 2, "gradient_accumulation": 1, "max_length": 512,
             "learning_rate": 5e-3, "save_steps": 100},
        tracking={"report_to": ["tensorboard", "mlflow"]},
    )  # fmt: skip
    result = main(config)
    metrics = read_metrics(out)
    assert metrics == result.metrics

    # TensorBoard: the event files in runs/<out's name> hold the log history's series.
    board = _tensorboard_series(out / "runs" / "out")
    _assert_same(board["train/loss"], _history(metrics, "loss"))
    _assert_same(board["train/rewards/margins"], _history(metrics, "rewards/margins"))
    _assert_same(board["eval/loss"], _history(metrics, "eval_loss"))

    # MLflow: one run in the SQLite store in out, holding the same series, final evaluation too.
    tracked = {run.tracker: run for run in metrics.tracking}
    assert set(tracked) == {"tensorboard", "mlflow"}
    assert (tracked["mlflow"].location, tracked["mlflow"].in_folder) == ("mlflow.db", True)
    client = mlflow.MlflowClient(tracking_uri=f"sqlite:///{out / 'mlflow.db'}")
    run = client.get_run(tracked["mlflow"].run_id)
    assert run.info.run_name == "out"
    assert run.info.status == "FINISHED"
    assert client.get_experiment(run.info.experiment_id).name == "agir-retrain"
    for key in ("loss", "rewards/accuracies", "eval_loss", "eval_garbled_loss"):
        history = sorted((m.step, m.value) for m in client.get_metric_history(run.info.run_id, key))
        if key == "eval_garbled_loss":  # the provenance splits reach the tracker too
            assert history == [(2, metrics.evaluation["garbled"].loss)]
        else:
            assert history == _history(metrics, key), key

    # The model card says where; the environment is as it was.
    card = (out / "README.md").read_text()
    assert "TensorBoard: `runs/out` in this folder" in card
    assert f"(id `{run.info.run_id}`) in the SQLite store `mlflow.db` in this folder" in card
    assert "TENSORBOARD_LOGGING_DIR" not in os.environ
    assert ("tracked in", "not tracked") not in metrics_rows(metrics)


@pytest.mark.slow
def test_sft_reports_its_own_metrics_to_tensorboard(dataset, tiny_model, tmp_path):
    pytest.importorskip("tensorboard")
    from agir_retrain.tasks.training.program import main

    rows = [json.loads(line) for line in (dataset / "dpo" / "train.jsonl").read_text().splitlines()]
    folder = tmp_path / "data" / "sft"
    folder.mkdir(parents=True)
    folder.joinpath("train.jsonl").write_text(
        "".join(
            json.dumps({"prompt": r["prompt"], "completion": r["chosen"], "prompt_kind": "code",
                        "run_id": f"r{i}"}) + "\n"
            for i, r in enumerate(rows)
        )
    )  # fmt: skip
    out = tmp_path / "sft-out"
    config = TrainConfig(
        dataset=str(tmp_path / "data"),
        base_model=tiny_model,
        out=str(out),
        objective="sft",
        sft={"max_steps": 2, "batch_size": 2, "gradient_accumulation": 1, "max_length": 512,
             "learning_rate": 5e-3, "save_steps": 100},
        tracking={"report_to": ["tensorboard"], "run_name": "sft-run", "dir": str(tmp_path / "tb")},
    )  # fmt: skip
    main(config)
    metrics = read_metrics(out)
    board = _tensorboard_series(tmp_path / "tb" / "runs" / "sft-run")
    _assert_same(board["train/loss"], _history(metrics, "loss"))
    _assert_same(board["train/mean_token_accuracy"], _history(metrics, "mean_token_accuracy"))
    assert not (out / "runs").exists()
    assert (
        f"TensorBoard: `{tmp_path / 'tb' / 'runs' / 'sft-run'}`" in (out / "README.md").read_text()
    )


def test_the_cli_names_a_missing_tracker_in_one_line_before_a_local_job_starts(dataset, tmp_path):
    from typer.testing import CliRunner

    from agir_retrain.flows.cli import app

    out = tmp_path / "adapter"
    outcome = CliRunner().invoke(
        app,
        ["train", str(dataset), "--out", str(out), "--set", "tracking.report_to=[trackio]"],
    )
    assert outcome.exit_code == 2
    lines = [line for line in outcome.output.splitlines() if line.strip()]
    assert len(lines) == 1, outcome.output
    assert "trackio not installed" in lines[0]
    assert not (out / "train_config.yaml").exists()  # no job was launched
