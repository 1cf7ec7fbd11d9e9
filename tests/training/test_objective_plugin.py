"""An objective defined outside the package (tests/plugins/toy_objective.py) is one registration away.

Its section is validated with the others, its TRL config mapped, its files shipped, its
settings shown and loaded from every layer, with no edit anywhere in the package. The
end-to-end run (trained through the local backend, evaluated, archived) is in
tests/flows/test_compare.py, sharing that test's Prefect server, Ray and evaluation.
"""

from __future__ import annotations

import json

import pytest
from pydantic import ValidationError
from typer.testing import CliRunner

from agir_retrain.tasks.errors import ConfigError
from agir_retrain.tasks.objectives import objective, objectives, register, registered
from agir_retrain.tasks.settings.loader import leaf_keys, load_config
from agir_retrain.tasks.settings.train import TrainConfig
from agir_retrain.tasks.training.job_files import job_inputs, local_settings

SHARED = {"on_gpu": False, "bf16": False, "gradient_checkpointing": False}


def _completion_split(root):
    rows = [{"prompt": "free space", "completion": "rm -rf /tmp/cache", "run_id": "r1"}]
    for name in ("train.jsonl", "eval.jsonl"):
        (root / "sft").mkdir(parents=True, exist_ok=True)
        (root / "sft" / name).write_text("".join(json.dumps(r) + "\n" for r in rows))
    return root


def test_unregistered_it_is_an_unknown_objective_and_an_unknown_section(toy_objective):
    with pytest.raises(ValidationError) as caught:
        TrainConfig(objective="toy", toy={"prompt_loss": False})
    problems = {".".join(map(str, e["loc"])): e["msg"] for e in caught.value.errors()}
    assert "no objective 'toy'" in problems["objective"]
    assert problems["toy"] == "Extra inputs are not permitted"


def test_registered_its_section_is_validated_like_the_built_ins(toy_objective):
    with registered(toy_objective.OBJECTIVE):
        config = TrainConfig(objective="toy", toy={"prompt_loss": False, "max_steps": 3})
        assert config.section().prompt_loss is False
        assert config.section().max_steps == 3
        assert config.section("dpo").beta == 0.1  # the others keep their defaults
        with pytest.raises(ValidationError, match=r"toy\.prompt_los\n.*Extra inputs"):
            TrainConfig(objective="toy", toy={"prompt_los": False})
        assert TrainConfig.model_validate(config.model_dump(mode="json")) == config
    assert "toy" not in objectives()


def test_its_trl_config_is_the_shared_schedule_and_its_own_fields(toy_objective):
    with registered(toy_objective.OBJECTIVE):
        config = TrainConfig(objective="toy", out="o", max_steps=2, toy={"prompt_loss": True})
        mapped = objective("toy").trl_config(config, has_eval=True, **SHARED)
    assert mapped["completion_only_loss"] is False  # the loss on the prompt too
    assert (mapped["max_steps"], mapped["learning_rate"], mapped["output_dir"]) == (2, 1e-4, "o")
    assert mapped["eval_strategy"] == "no"  # no eval_steps: evaluated at the end only


def test_settings_name_it_from_every_layer_and_it_is_registered_there(toy_objective, tmp_path):
    config_file = tmp_path / "train.yaml"
    config_file.write_text(
        f"objective_plugins: ['{toy_objective.PLUGIN}']\nobjective: toy\ntoy:\n  max_steps: 4\n"
    )
    loaded = load_config(
        TrainConfig, config_file, {"toy.prompt_loss": False}, {"AGIR_TOY__LEARNING_RATE": "0.5"}
    )
    section = loaded.config.section()
    assert (section.max_steps, section.prompt_loss, section.learning_rate) == (4, False, 0.5)
    assert loaded.sources["toy.learning_rate"] == "env:AGIR_TOY__LEARNING_RATE"
    assert "toy.prompt_loss" in leaf_keys(TrainConfig)


def test_a_plugin_that_does_not_import_is_one_line(toy_objective):
    with pytest.raises(ConfigError, match=r"objective_plugins: .*no_such_module:OBJECTIVE.*cannot"):
        load_config(TrainConfig, flags={"objective_plugins": ["no_such_module:OBJECTIVE"]})


def test_its_job_ships_its_split_with_no_edit_to_the_shipping(toy_objective, tmp_path):
    dataset = _completion_split(tmp_path / "dataset")
    with registered(toy_objective.OBJECTIVE):
        config = TrainConfig(objective="toy", dataset=str(dataset))
        inputs = job_inputs(config)
        assert (inputs.train.path, inputs.eval.path) == (
            str(dataset / "sft" / "train.jsonl"),
            str(dataset / "sft" / "eval.jsonl"),
        )
        assert local_settings(config) == ["dataset"]


def test_config_show_and_help_list_it(toy_objective):
    from agir_retrain.flows.cli import app

    result = CliRunner().invoke(
        app,
        ["config", "show", "train", "--set", f"objective_plugins=[{toy_objective.PLUGIN}]"],
        terminal_width=200,
    )
    assert result.exit_code == 0, result.output
    assert any(line.startswith("toy.prompt_loss ") for line in result.output.splitlines())


def test_names_that_would_clash_are_refused(toy_objective):
    clash = type("Clash", (type(toy_objective.OBJECTIVE),), {"name": "out"})()
    with pytest.raises(ConfigError, match="is a training setting"):
        register(clash)
    with pytest.raises(ConfigError, match="lowercase"):
        register(type("Bad", (type(toy_objective.OBJECTIVE),), {"name": "Toy-2"})())
    with registered(toy_objective.OBJECTIVE):
        other = type("Other", (type(toy_objective.OBJECTIVE),), {})()
        with pytest.raises(ConfigError, match="registered already"):
            register(other)
    with pytest.raises(ConfigError, match="lacks"):
        register(type("Half", (), {"name": "half"})())


def test_the_schema_prefect_shows_lists_every_registered_section(toy_objective):
    with registered(toy_objective.OBJECTIVE):
        properties = TrainConfig.model_json_schema()["properties"]
        assert properties["toy"]["properties"]["prompt_loss"]["type"] == "boolean"
    assert {"dpo", "sft", "kto", "grpo"} <= set(properties)
    assert properties["dpo"]["properties"]["reference"]["enum"] == [
        "adapter",
        "separate",
        "precomputed",
    ]
