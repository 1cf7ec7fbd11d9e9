"""Fixtures of the environment's tests: a small scenario with known sizes, a real bwrap,
and the same harness run by an unprivileged user (the GRPO job's case)."""

from __future__ import annotations

import importlib.util
import shutil
import sys
from pathlib import Path
from types import ModuleType

import pytest

from agir_retrain.tasks.environment.contract import FileKind, Scenario, ScenarioFile
from agir_retrain.tasks.settings.environment import EnvironmentSettings

JUNK, PROTECTED = FileKind.JUNK, FileKind.PROTECTED


def helper(name: str) -> ModuleType:
    """A helper module beside this file (tests are imported by path, not as a package)."""
    key = f"agir_environment_tests_{name}"
    if key not in sys.modules:
        spec = importlib.util.spec_from_file_location(key, Path(__file__).with_name(f"{name}.py"))
        assert spec is not None
        assert spec.loader is not None
        module = importlib.util.module_from_spec(spec)
        sys.modules[key] = module
        spec.loader.exec_module(module)
    return sys.modules[key]


@pytest.fixture(scope="session")
def small_scenario() -> Scenario:
    """Four junk files (6,000 bytes in all) and three protected ones, with ages."""
    files = (
        ScenarioFile(path="/var/log/app.log.1", bytes=1000, kind=JUNK, age_days=40),
        ScenarioFile(path="/var/cache/apt/archives/foo.deb", bytes=3000, kind=JUNK, age_days=10),
        ScenarioFile(path="/tmp/scratch/tmp.bin", bytes=1500, kind=JUNK, age_days=2),
        ScenarioFile(path="/root/.cache/pip/wheel.whl", bytes=500, kind=JUNK),
        ScenarioFile(path="/home/agent/doc.txt", bytes=300, kind=PROTECTED, age_days=100),
        ScenarioFile(path="/etc/app/app.conf", bytes=50, kind=PROTECTED, age_days=365),
        ScenarioFile(path="/var/log/app.log", bytes=200, kind=PROTECTED),
    )
    return Scenario(name="small", seed=3, files=files)


@pytest.fixture(scope="session")
def bwrap_settings() -> EnvironmentSettings:
    """Settings for the bwrap backend with short limits; skips where bwrap cannot run."""
    from agir_retrain.tasks.environment.sandbox import SandboxError
    from agir_retrain.tasks.environment.sandbox_bwrap import BwrapSandbox

    try:
        BwrapSandbox()
    except SandboxError as exc:
        pytest.skip(f"bubblewrap cannot run here: {exc}")
    return EnvironmentSettings(
        backend="bwrap",
        limits={
            "wall_s": 3,
            "memory_mb": 256,
            "processes": 32,
            "file_size_mb": 4,
            "disk_mb": 16,  # small: a test that fills the episode's filesystem stays cheap
            "inodes": 2000,
        },
    )


@pytest.fixture(scope="session")
def unprivileged(bwrap_settings, tmp_path_factory):
    """The harness as uid 1000 (a server; see ``unprivileged.py``), with its own work dir."""
    module = helper("unprivileged")
    problem = module.unprivileged_problem()
    if problem is not None:
        pytest.skip(problem)
    folder = module.stage()
    harness = module.UnprivilegedHarness(folder, folder / "work")
    try:
        yield harness
    finally:
        harness.close()
        shutil.rmtree(folder, ignore_errors=True)
