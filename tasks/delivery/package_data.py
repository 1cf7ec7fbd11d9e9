"""Find the files the project ships as package data, from a checkout or from a wheel.

The GPU image's Dockerfile, its entry point and pins, the accelerate configs and the job
templates live in ``agir_retrain.container``; the Docker build context is assembled from
the installed package, so nothing assumes a checkout.
"""

from __future__ import annotations

import shutil
from importlib.resources import files
from pathlib import Path

# Packages copied into the image's build context, under /app/agir_retrain/<name>.
_SHIPPED_PACKAGES = ("tasks", "flows", "container")
_IGNORED = shutil.ignore_patterns("__pycache__", "*.pyc", "*.pyo")


def package_dir(name: str) -> Path:
    """The folder of ``agir_retrain.<name>`` on this machine (checkout or site-packages)."""
    return Path(str(files(f"agir_retrain.{name}")))


def container_file(*parts: str) -> Path:
    """A file of the ``container`` package data, e.g. ``container_file("accelerate", "ddp.yaml")``."""
    return package_dir("container").joinpath(*parts)


def accelerate_configs_dir() -> Path:
    """The folder holding the named accelerate configs (``single_gpu``, ``ddp``, ``fsdp_qlora``)."""
    return container_file("accelerate")


def write_build_context(dest: Path) -> Path:
    """Lay out the GPU image's build context in ``dest`` from the installed package; return it.

    The context holds ``agir_retrain/{tasks,flows,container}`` and nothing else (no data,
    no environments, no outputs), so its hash changes only when the code or pins do.
    """
    dest.mkdir(parents=True, exist_ok=True)
    for name in _SHIPPED_PACKAGES:
        target = dest / "agir_retrain" / name
        if target.exists():
            shutil.rmtree(target)
        shutil.copytree(package_dir(name), target, ignore=_IGNORED)
    return dest


DOCKERFILE_IN_CONTEXT = "agir_retrain/container/Dockerfile"
