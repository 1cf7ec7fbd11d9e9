"""Shared fixtures: paths to the handmade run files, and markers' policy.

Slow and integration tests are marked (see pyproject.toml); `pytest -m "not slow and
not integration"` is the quick local loop. GPU tests are skipped where CUDA is absent.
"""

from __future__ import annotations

import os
from pathlib import Path

import pytest

DATA = Path(__file__).parent / "data"

os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("TRANSFORMERS_OFFLINE", "1")
os.environ.setdefault("PREFECT_SERVER_ANALYTICS_ENABLED", "false")
os.environ.setdefault("PREFECT_SERVER_EPHEMERAL_STARTUP_TIMEOUT_SECONDS", "180")
os.environ.setdefault("RAY_AUTH_MODE", "disabled")  # token auth is on by default in Ray 2.60
os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")


def pytest_collection_modifyitems(config: pytest.Config, items: list[pytest.Item]) -> None:
    """Skip `gpu` tests, with the reason, where CUDA is absent."""
    if not any("gpu" in item.keywords for item in items):
        return
    import torch

    if torch.cuda.is_available():
        return
    skip = pytest.mark.skip(reason="needs CUDA; none on this machine")
    for item in items:
        if "gpu" in item.keywords:
            item.add_marker(skip)


@pytest.fixture(scope="session")
def data_file():
    """Path to a handmade run file in tests/data."""

    def path(name: str) -> str:
        return str(DATA / name)

    return path


@pytest.fixture(scope="session")
def tiny_model(tmp_path_factory) -> str:
    """A tiny random Llama and its locally trained tokenizer, made once per session."""
    from tasks.tiny_model import make_tiny_model

    return str(make_tiny_model(tmp_path_factory.mktemp("tiny-model")))


@pytest.fixture(scope="session")
def local_ray():
    """One local Ray for the session (2 CPUs, no dashboard); task runners reuse it."""
    import ray

    ray.init(num_cpus=2, include_dashboard=False, object_store_memory=1 << 30)
    yield
    ray.shutdown()


@pytest.fixture(scope="session")
def prefect_server(tmp_path_factory):
    """One temporary Prefect server for the session (its database in a temporary folder)."""
    from prefect.testing.utilities import prefect_test_harness

    os.environ["PREFECT_HOME"] = str(tmp_path_factory.mktemp("prefect-home"))
    with prefect_test_harness(server_startup_timeout=180):
        yield
