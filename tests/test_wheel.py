"""The project installs cleanly from a wheel and works from a folder outside the checkout.

The wheel must carry no top-level ``tasks`` or ``flows`` (they would shadow or overwrite
any other module of that name) and must ship its package data (accelerate configs, the
Dockerfile), since nothing may assume a checkout. The venv here is fresh; its third-party
packages come from the test venv by a plain path entry (not re-downloaded), which does not
run the test venv's editable finder, so ``agir_retrain`` resolves to the wheel alone.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import sysconfig
import venv
import zipfile
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]

pytestmark = [pytest.mark.slow, pytest.mark.integration]


@pytest.fixture(scope="module")
def wheel(tmp_path_factory) -> Path:
    """A wheel of the project, built from the checkout."""
    dist = tmp_path_factory.mktemp("dist")
    subprocess.run(
        [sys.executable, "-m", "pip", "wheel", "--no-deps", "--no-build-isolation", "-q",
         "-w", str(dist), str(ROOT)],
        check=True, timeout=300,
    )  # fmt: skip
    (found,) = dist.glob("agir_retrain-*.whl")
    return found


@pytest.fixture(scope="module")
def installed(wheel, tmp_path_factory) -> Path:
    """A fresh venv outside the checkout with the wheel installed; returns its bin folder."""
    env_dir = tmp_path_factory.mktemp("wheel-venv")
    venv.create(env_dir, with_pip=False)
    site = Path(
        sysconfig.get_path("purelib", vars={"base": str(env_dir), "platbase": str(env_dir)})
    )
    deps = sysconfig.get_path("purelib")  # the test venv's packages, as a plain path entry
    (site / "zz_test_dependencies.pth").write_text(deps + "\n")
    subprocess.run(
        [sys.executable, "-m", "pip", "--python", str(env_dir / "bin" / "python"), "install",
         "--no-deps", "-q", str(wheel)],
        check=True, timeout=300,
    )  # fmt: skip
    return env_dir / "bin"


def _run(bin_dir: Path, *args: str, cwd: Path, timeout: int = 600) -> str:
    env = {k: v for k, v in os.environ.items() if k != "PYTHONPATH"}
    env["PATH"] = f"{bin_dir}{os.pathsep}{env['PATH']}"
    result = subprocess.run(
        [str(bin_dir / "agir-retrain"), *args],
        cwd=cwd, env=env, capture_output=True, text=True, timeout=timeout,
    )  # fmt: skip
    assert result.returncode == 0, result.stdout[-3000:] + result.stderr[-3000:]
    return result.stdout


def test_wheel_holds_only_our_namespace_and_the_package_data(wheel):
    names = zipfile.ZipFile(wheel).namelist()
    top = {name.split("/")[0] for name in names}
    assert "tasks" not in top
    assert "flows" not in top
    assert {t for t in top if not t.endswith(".dist-info")} == {"agir_retrain"}
    for data in (
        "agir_retrain/container/Dockerfile",
        "agir_retrain/container/entrypoint.sh",
        "agir_retrain/container/constraints.txt",
        "agir_retrain/container/accelerate/ddp.yaml",
        "agir_retrain/container/accelerate/fsdp_qlora.yaml",
        "agir_retrain/container/prefect/kubernetes-gpu-job-template.json",
        "agir_retrain/tasks/training/__main__.py",
    ):
        assert data in names, data


def test_works_from_a_folder_outside_the_checkout(installed, tmp_path, tiny_model):
    python = installed / "python"
    where = subprocess.run(
        [str(python), "-c", "import agir_retrain.tasks.records as r; print(r.__file__)"],
        cwd=tmp_path, capture_output=True, text=True, timeout=120, check=True,
    ).stdout.strip()  # fmt: skip
    assert not where.startswith(str(ROOT)), f"imported from the checkout: {where}"

    shown = _run(installed, "config", "show", "retrain", cwd=tmp_path)
    assert "train.dpo.beta" in shown

    _run(installed, "synth", "--runs", "40", "--out", str(tmp_path / "corpus"), cwd=tmp_path)
    _run(installed, "ingest", str(tmp_path / "corpus" / "runs"), "--out", str(tmp_path / "d"),
         cwd=tmp_path)  # fmt: skip
    assert (tmp_path / "d" / "report.json").is_file()

    # Two DDP ranks on the CPU: the accelerate config is found in the installed package data.
    data = tmp_path / "dpo"
    data.mkdir()
    rows = [
        {"prompt": [{"role": "user", "content": f"free space, take {i}"}],
         "chosen": [{"role": "assistant", "content": "```python\nimport shutil\n```"}],
         "rejected": [{"role": "assistant", "content": f"no {i}"}]}
        for i in range(4)
    ]  # fmt: skip
    (data / "train.jsonl").write_text("".join(json.dumps(row) + "\n" for row in rows))
    _run(
        installed, "train", str(data), "--base-model", tiny_model,
        "--out", str(tmp_path / "adapter"), "--processes", "2", "--no-quantize",
        "--set", "dpo.max_steps=1", "--set", "dpo.batch_size=1", "--set", "dpo.max_length=256",
        cwd=tmp_path,
    )  # fmt: skip
    assert (tmp_path / "adapter" / "adapter_model.safetensors").is_file()
