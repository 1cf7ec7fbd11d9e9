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
