"""Fixtures of the environment's tests: a small scenario with known sizes, a real bwrap."""

from __future__ import annotations

import pytest

from agir_retrain.tasks.environment.contract import FileKind, Scenario, ScenarioFile
from agir_retrain.tasks.settings.environment import EnvironmentSettings

JUNK, PROTECTED = FileKind.JUNK, FileKind.PROTECTED


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
        backend="bwrap", limits={"wall_s": 3, "memory_mb": 256, "processes": 32, "file_size_mb": 4}
    )
