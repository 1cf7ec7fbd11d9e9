"""Fixtures of the delivery tests: the training base image made from this host."""

from __future__ import annotations

import pytest


@pytest.fixture(scope="session")
def train_base_image(docker_engine) -> str:
    """This environment's training base image: imported once (~2 min), reused while unchanged."""
    from agir_retrain.tasks.delivery.base_image import ensure_base_image
    from agir_retrain.tasks.errors import ConfigError

    try:
        return ensure_base_image(timeout_s=1200)
    except ConfigError as exc:  # a pin of container/constraints.txt is not installed here
        pytest.skip(f"no training base image from this environment: {exc}")
