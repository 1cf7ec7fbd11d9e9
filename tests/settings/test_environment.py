"""EnvironmentSettings: every field defaulted, misspelt keys and bad values refused."""

from __future__ import annotations

import pydantic
import pytest

from agir_retrain.tasks.settings.base import Section
from agir_retrain.tasks.settings.environment import EnvironmentSettings


def test_defaults_are_the_documented_ones():
    settings = EnvironmentSettings()
    assert isinstance(settings, Section)
    assert settings.backend == "bwrap"
    assert (settings.limits.wall_s, settings.limits.memory_mb) == (20.0, 512)
    assert (settings.limits.processes, settings.limits.file_size_mb) == (64, 64)
    assert settings.clock is None
    assert (settings.reward.damage_penalty, settings.reward.not_ran_penalty) == (1.0, 0.5)


@pytest.mark.parametrize(
    "values",
    [
        {"backend": "podman"},
        {"limits": {"wall_s": 0}},
        {"limits": {"memory_mb": 16}},
        {"limits": {"walltime": 5}},
        {"sandbox": "bwrap"},
        {"reward": {"damage_penalty": -1}},
    ],
)
def test_bad_settings_are_refused(values):
    with pytest.raises(pydantic.ValidationError):
        EnvironmentSettings.model_validate(values)


def test_settings_are_frozen():
    settings = EnvironmentSettings()
    with pytest.raises(pydantic.ValidationError):
        settings.backend = "docker"  # type: ignore[misc]
