"""Config layering: defaults < YAML < environment < flags, with provenance and clear errors."""

from __future__ import annotations

import pytest

from agir_retrain.tasks.errors import ConfigError
from agir_retrain.tasks.settings.loader import (
    field_description,
    leaf_keys,
    load_config,
    parse_set_pairs,
)
from agir_retrain.tasks.settings.models import IngestConfig, RetrainConfig


def test_defaults_then_file_then_env_then_flags(tmp_path):
    config_file = tmp_path / "ingest.yaml"
    config_file.write_text("out: from-file\nshard_bytes: 1000\nread:\n  max_message_chars: 50\n")
    # AGIR_BASE_MODEL is another command's setting: left to it. AGIR_CACHE_DIR is no setting.
    env = {
        "AGIR_SHARD_BYTES": "2000",
        "AGIR_READ__MAX_FILE_BYTES": "3000",
        "AGIR_BASE_MODEL": "x",
        "AGIR_CACHE_DIR": "/tmp",
    }
    loaded = load_config(IngestConfig, config_file, {"shard_bytes": 4000, "workers": None}, env)
    config = loaded.config
    assert (config.out, config.shard_bytes) == ("from-file", 4000)
    assert (config.read.max_message_chars, config.read.max_file_bytes) == (50, 3000)
    assert loaded.sources["out"] == f"file:{config_file}"
    assert loaded.sources["shard_bytes"] == "flag"
    assert loaded.sources["read.max_file_bytes"] == "env:AGIR_READ__MAX_FILE_BYTES"
    assert loaded.sources["workers"] == "default"


def test_unknown_key_is_named_with_its_origin(tmp_path):
    config_file = tmp_path / "bad.yaml"
    config_file.write_text("shard_byte: 10\n")
    with pytest.raises(ConfigError, match=r"shard_byte \(from file:.*\): unknown setting"):
        load_config(IngestConfig, config_file, environ={})


def test_invalid_value_is_named_with_its_origin():
    with pytest.raises(ConfigError, match=r"shard_bytes \(from env:AGIR_SHARD_BYTES\)"):
        load_config(IngestConfig, environ={"AGIR_SHARD_BYTES": "-5"})


@pytest.mark.parametrize("name", ["AGIR_OTHER", "AGIR_TRAINING__BETA", "AGIR_READ_MAX_FILE_BYTES"])
def test_an_agir_variable_naming_no_setting_is_rejected(name):
    # Before, each was dropped without a word (AGIR_TRAINING__BETA was the docstring's example).
    with pytest.raises(ConfigError, match=rf"{name} \(from env\): names no setting of any command"):
        load_config(IngestConfig, environ={name: "1"})


def test_env_names_nested_settings_with_double_underscores():
    loaded = load_config(RetrainConfig, environ={"AGIR_TRAIN__DPO__BETA": "0.2"})
    assert loaded.config.train.dpo.beta == 0.2
    assert loaded.sources["train.dpo.beta"] == "env:AGIR_TRAIN__DPO__BETA"


class TestParseSetPairs:
    def test_values_are_yaml(self):
        assert parse_set_pairs(["a.b=1", "c=[1, 2]", "d=", "e=x=y"]) == {
            "a.b": 1,
            "c": [1, 2],
            "d": "",
            "e": "x=y",
        }

    @pytest.mark.parametrize(
        ("pair", "message"),
        [("workers", "takes key=value"), ("=3", "takes key=value"), ("w=[1", "not valid YAML")],
    )
    def test_malformed_pairs(self, pair, message):
        with pytest.raises(ConfigError, match=message):
            parse_set_pairs([pair])


def test_unreadable_file(tmp_path):
    with pytest.raises(ConfigError, match="cannot read config file"):
        load_config(IngestConfig, tmp_path / "missing.yaml", environ={})


def test_configs_are_frozen():
    config = load_config(IngestConfig, environ={}).config
    with pytest.raises(ValueError, match="frozen"):
        config.out = "elsewhere"  # type: ignore[misc]


def test_every_setting_has_help_text():
    for key in leaf_keys(IngestConfig):
        assert field_description(IngestConfig, key), key


def test_retrain_sections_take_top_level_values_only_where_unset():
    config = RetrainConfig(
        inputs=["runs/"],
        out="job/",
        base_model="models/base",
        train={"out": "elsewhere/adapter"},
    )
    assert config.build.inputs == ["runs/"]
    assert config.build.out == "job/dataset"
    assert config.build.base_model == config.train.base_model == "models/base"
    assert config.train.dataset == "job/dataset"
    assert config.train.out == "elsewhere/adapter"  # given, so kept
    assert config.archive_to == "job/archives"
