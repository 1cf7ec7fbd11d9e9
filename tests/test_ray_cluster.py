"""build-dataset on a real two-node Ray cluster (both nodes on this machine) equals the embedded run."""

from __future__ import annotations

import json
import os
import socket
import subprocess
import sys
from pathlib import Path

import pytest

from tasks.synth import write_corpus

pytestmark = [pytest.mark.integration, pytest.mark.slow]
ROOT = Path(__file__).resolve().parent.parent
OUTPUTS = (
    "runs.parquet", "scored.parquet", "pairs.parquet", "quarantine.jsonl",
    "dpo/train.jsonl", "dpo/eval.jsonl", "kto/train.jsonl",
)  # fmt: skip


def _free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return probe.getsockname()[1]


def _env(tmp_path: Path) -> dict[str, str]:
    env = {
        k: v for k, v in os.environ.items() if not k.startswith(("PREFECT_API_URL", "RAY_ADDRESS"))
    }
    return env | {
        "RAY_AUTH_MODE": "disabled",
        "PREFECT_HOME": str(tmp_path / "prefect-home"),
        "HF_HUB_OFFLINE": "1",
    }


def _ray(args: list[str], env: dict[str, str]) -> subprocess.CompletedProcess:
    return subprocess.run(
        [sys.executable, "-m", "ray.scripts.scripts", *args],
        env=env,
        capture_output=True,
        text=True,
        timeout=180,
    )


def _dataset(corpus: Path, out: Path, model: str, env: dict[str, str], *extra: str) -> dict:
    command = [
        sys.executable, "-m", "flows.cli", "dataset", str(corpus / "runs"), "--out", str(out),
        "--base-model", model, "--work-dir", str(out.parent / f"{out.name}-work"),
        "--set", "shard_bytes=1048576", "--set", "garble.max_new_tokens=16", *extra,
    ]  # fmt: skip
    result = subprocess.run(command, cwd=ROOT, env=env, capture_output=True, text=True, timeout=900)
    assert result.returncode == 0, result.stdout[-3000:] + result.stderr[-3000:]
    return json.loads((out / "report.json").read_text())


@pytest.fixture
def two_node_cluster(tmp_path):
    env = _env(tmp_path)
    port = _free_port()
    head = _ray(
        [
            "start",
            "--head",
            f"--port={port}",
            "--num-cpus=1",
            "--include-dashboard=false",
            "--disable-usage-stats",
        ],
        env,
    )
    assert head.returncode == 0, head.stderr
    try:
        worker = _ray(
            [
                "start",
                f"--address=127.0.0.1:{port}",
                "--num-cpus=1",
                '--resources={"second_node": 1}',
            ],
            env,
        )
        assert worker.returncode == 0, worker.stderr
        yield f"127.0.0.1:{port}", env
    finally:
        _ray(["stop", "--force"], env)


def test_cluster_output_equals_the_embedded_run(two_node_cluster, tiny_model, tmp_path):
    address, env = two_node_cluster
    check = subprocess.run(
        [sys.executable, "-c", f"import ray; ray.init(address='{address}'); print(len([n for n in ray.nodes() if n['Alive']]))"],
        env=env, capture_output=True, text=True, timeout=120,
    )  # fmt: skip
    assert check.stdout.strip().splitlines()[-1] == "2", check.stderr[-2000:]

    write_corpus(tmp_path / "corpus", runs=80, seed=41)
    on_cluster = _dataset(
        tmp_path / "corpus", tmp_path / "cluster", tiny_model, env, "--ray-address", address
    )
    embedded = _dataset(tmp_path / "corpus", tmp_path / "embedded", tiny_model, env)
    assert on_cluster["shards"]["total"] > 1
    assert on_cluster["runs_by_class"] == embedded["runs_by_class"]
    for name in OUTPUTS:
        assert (tmp_path / "cluster" / name).read_bytes() == (
            tmp_path / "embedded" / name
        ).read_bytes(), name
