"""What a training job reads, per objective: the files, the settings naming them, their rewrite."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from agir_retrain.tasks.environment.scenario import scenario_to_json
from agir_retrain.tasks.errors import ConfigError, DatasetError
from agir_retrain.tasks.settings.models import TrainConfig
from agir_retrain.tasks.training import dpo, grpo, kto, sft
from agir_retrain.tasks.training.job_files import JobFile, job_inputs, local_settings, relocated

PROMPT = [{"role": "user", "content": "Free some space."}]
ANSWER = [{"role": "assistant", "content": "```python\nprint('ok')\n```"}]


def _write(path: Path, rows: list[dict]) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text("".join(json.dumps(row) + "\n" for row in rows))
    return path


@pytest.fixture
def folder(tmp_path) -> Path:
    """A dataset folder as the dataset flow writes it: every objective's split, plus bulk."""
    root = tmp_path / "dataset"
    _write(root / "dpo" / "train.jsonl", [{"prompt": PROMPT, "chosen": ANSWER, "rejected": ANSWER}])
    _write(root / "dpo" / "eval.jsonl", [{"prompt": PROMPT, "chosen": ANSWER, "rejected": ANSWER}])
    sft_row = {"prompt": PROMPT, "completion": ANSWER, "prompt_kind": "code", "run_id": "r1"}
    _write(root / "sft" / "train.jsonl", [sft_row])
    _write(root / "sft" / "eval.jsonl", [sft_row])
    kto_rows = [{"prompt": PROMPT, "completion": ANSWER, "label": label} for label in (True, False)]
    _write(root / "kto" / "train.jsonl", kto_rows)
    _write(root / "kto" / "eval.jsonl", [{"prompt": PROMPT, "completion": ANSWER, "label": False}])
    (root / "pairs.parquet").write_bytes(b"PAR1 bulk no job reads")
    return root


@pytest.fixture
def scenario_file(tmp_path) -> Path:
    from agir_retrain.tasks.environment.profiles import build_profile

    path = tmp_path / "scenarios" / "small.json"
    path.parent.mkdir()
    path.write_bytes(scenario_to_json(build_profile("debian-like")))
    return path


@pytest.fixture
def rehearsal(tmp_path) -> Path:
    return _write(tmp_path / "chat.jsonl", [{"messages": PROMPT + ANSWER}])


def _paths(config: TrainConfig) -> dict[str, str]:
    return {f"{f.key}[{f.index}]" if f.index is not None else f.key: f.path
            for f in job_inputs(config).files}  # fmt: skip


class TestJobInputs:
    @pytest.mark.parametrize("objective", ["dpo", "sft", "kto"])
    def test_each_objective_reads_its_own_split(self, objective, folder):
        inputs = job_inputs(TrainConfig(dataset=str(folder), objective=objective))
        assert inputs.train == JobFile(
            key="dataset", path=str(folder / objective / "train.jsonl"), name="train.jsonl"
        )
        assert inputs.eval == JobFile(
            key="eval_dataset", path=str(folder / objective / "eval.jsonl"), name="eval.jsonl"
        )
        assert inputs.extra == ()

    def test_sft_also_reads_its_rehearsal_file(self, folder, rehearsal):
        config = TrainConfig(
            dataset=str(folder), objective="sft", sft={"rehearsal_file": str(rehearsal)}
        )
        assert job_inputs(config).extra == (
            JobFile(key="sft.rehearsal_file", path=str(rehearsal), name="rehearsal.jsonl"),
        )

    def test_grpo_reads_the_sft_prompts_and_its_scenario_files_not_the_profiles(
        self, folder, scenario_file, tmp_path
    ):
        config = TrainConfig(
            dataset=str(folder),
            objective="grpo",
            eval_dataset=str(folder / "sft" / "eval.jsonl"),  # GRPO reads no eval file
            grpo={"scenarios": ["debian-like", str(scenario_file)]},
        )
        assert _paths(config) == {
            "dataset": str(folder / "sft" / "train.jsonl"),
            "grpo.scenarios[1]": str(scenario_file),
        }
        assert job_inputs(config).extra[0].name == "scenarios/1-small.json"

    def test_a_single_file_is_the_training_file_of_every_objective(self, folder):
        for objective in ("dpo", "sft", "kto", "grpo"):
            one = folder / ("sft" if objective == "grpo" else objective) / "train.jsonl"
            inputs = job_inputs(TrainConfig(dataset=str(one), objective=objective))
            assert inputs.train.path == str(one), objective

    def test_the_modules_load_what_job_inputs_names(self, folder, rehearsal):
        """One truth: each load_data reports the files data_files names."""
        config = TrainConfig(
            dataset=str(folder),
            objective="sft",
            sft={"rehearsal_file": str(rehearsal), "rehearsal_share": 1.0},
        )
        data = sft.OBJECTIVE.load_data(config)
        assert data.files == sft.OBJECTIVE.data_files(config)
        assert any(row.get("source") == "rehearsal" for row in data.train)
        for module, objective in ((kto, "kto"), (grpo, "grpo")):
            other = TrainConfig(dataset=str(folder), objective=objective)
            assert module.OBJECTIVE.load_data(other).files == module.OBJECTIVE.data_files(other)
        dpo_files = dpo.OBJECTIVE.data_files(TrainConfig(dataset=str(folder)))
        assert dpo_files.train.endswith("dpo/train.jsonl")

    @pytest.mark.parametrize(
        ("objective", "settings", "error", "message"),
        [
            ("sft", {}, DatasetError, r"sft/train\.jsonl: no such file"),
            ("kto", {}, DatasetError, r"kto/train\.jsonl: no such file"),
            ("dpo", {}, DatasetError, "no training file"),
            ("sft", {"sft": {"rehearsal_file": "/no/chat.jsonl"}}, DatasetError,
             r"sft\.rehearsal_file='/no/chat\.jsonl': no such file"),
            ("grpo", {"grpo": {"scenarios": ["debian-like", "/no/such.json"]}}, ConfigError,
             r"grpo\.scenarios\[1\]='/no/such\.json': neither a built-in profile .* nor a scenario file"),
        ],
    )  # fmt: skip
    def test_a_missing_file_is_one_clear_line(
        self, objective, settings, error, message, folder, tmp_path
    ):
        empty = tmp_path / "empty"
        empty.mkdir()
        dataset = folder if "sft" in settings or "grpo" in settings else empty
        with pytest.raises(error, match=message) as caught:
            job_inputs(TrainConfig(dataset=str(dataset), objective=objective, **settings))
        assert "\n" not in str(caught.value)


class TestRelocated:
    def test_every_file_setting_is_rewritten_and_nothing_else(self, folder, scenario_file):
        config = TrainConfig(
            dataset=str(folder),
            objective="grpo",
            eval_dataset=str(folder / "sft" / "eval.jsonl"),
            grpo={"scenarios": [str(scenario_file), "debian-like"], "num_generations": 2},
        )
        update = relocated(config, job_inputs(config), lambda f: f"/data/{f.name}")
        assert sorted(update) == ["dataset", "eval_dataset", "grpo"]
        moved = config.model_copy(update=update)
        assert moved.dataset == "/data/train.jsonl"
        assert moved.eval_dataset is None
        assert moved.grpo.scenarios == ["/data/scenarios/0-small.json", "debian-like"]
        assert moved.grpo.num_generations == 2  # the rest of the section is kept

    def test_the_rehearsal_file_is_rewritten(self, folder, rehearsal):
        config = TrainConfig(
            dataset=str(folder),
            objective="sft",
            sft={"rehearsal_file": str(rehearsal), "rehearsal_share": 0.5},
        )
        moved = config.model_copy(
            update=relocated(config, job_inputs(config), lambda f: f"/data/{f.name}")
        )
        assert (moved.dataset, moved.eval_dataset) == ("/data/train.jsonl", "/data/eval.jsonl")
        assert moved.sft.rehearsal_file == "/data/rehearsal.jsonl"
        assert moved.sft.rehearsal_share == 0.5

    def test_a_tasks_file_naming_a_scenario_file_cannot_be_shipped(self, tmp_path, scenario_file):
        tasks = _write(
            tmp_path / "tasks.jsonl",
            [{"task_id": "t1/code", "prompt": PROMPT, "scenario": str(scenario_file)}],
        )
        config = TrainConfig(dataset=str(tasks), objective="grpo")
        inputs = job_inputs(config)  # a local run reads it where it is
        assert [f.path for f in inputs.extra] == [str(scenario_file)]
        with pytest.raises(ConfigError, match="tasks file names the scenario file"):
            relocated(config, inputs, lambda f: f"/data/{f.name}")

    def test_local_settings_name_what_a_job_elsewhere_cannot_see(self, scenario_file):
        config = TrainConfig(
            dataset="s3://b/d",
            objective="grpo",
            eval_dataset="/here/eval.jsonl",  # GRPO reads none: nothing to ship
            grpo={"scenarios": ["debian-like", str(scenario_file), "s3://b/s.json"]},
        )
        assert local_settings(config) == ["grpo.scenarios[1]"]
        sft_config = TrainConfig(
            dataset="s3://b/d", objective="sft", sft={"rehearsal_file": "chat.jsonl"}
        )
        assert local_settings(sft_config) == ["sft.rehearsal_file"]
        assert local_settings(TrainConfig(dataset="d", objective="kto")) == ["dataset"]


def test_a_scenario_shipped_to_object_storage_loads_from_its_url(scenario_file):
    """The prefect backend may ship a scenario file to s3://...; the worker reads it there."""
    import uuid

    import fsspec

    from agir_retrain.tasks.environment.scenario import load_scenario
    from agir_retrain.tasks.evaluation.episodes import load_scenario_at

    url = f"memory://agir-scenarios-{uuid.uuid4().hex[:8]}/0-small.json"
    with fsspec.open(url, "wb") as handle:
        handle.write(scenario_file.read_bytes())
    assert load_scenario_at(url) == load_scenario(str(scenario_file))
    assert load_scenario_at("debian-like").name == "debian-like"
