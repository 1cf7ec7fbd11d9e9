"""build-dataset on a real two-node Ray cluster (both nodes on this machine): shards run on both
nodes, and the output equals the embedded run's."""

from __future__ import annotations

import json
import os
import re
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import pytest

from agir_retrain.tasks.synth.corpus import write_corpus

pytestmark = [pytest.mark.integration, pytest.mark.slow]
ROOT = Path(__file__).resolve().parents[2]
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
        "RAY_DEDUP_LOGS": "0",  # every worker's "shard ... on Ray node ..." line reaches the driver
    }


def _ray_node(args: list[str], env: dict[str, str], log: Path) -> subprocess.Popen:
    """A Ray node in the foreground (--block) and in its own process group, so stopping it
    stops exactly its processes (``ray stop`` would also kill this session's own Ray)."""
    command = [sys.executable, "-m", "ray.scripts.scripts", "start", "--block", *args]
    return subprocess.Popen(
        command, env=env, stdout=log.open("wb"), stderr=subprocess.STDOUT, start_new_session=True
    )


def _listening(port: int) -> bool:
    with socket.socket() as probe:
        probe.settimeout(1)
        return probe.connect_ex(("127.0.0.1", port)) == 0


def _stop(node: subprocess.Popen) -> None:
    for sig in (signal.SIGTERM, signal.SIGKILL):
        try:
            os.killpg(node.pid, sig)
            node.wait(timeout=30)
            return
        except (ProcessLookupError, subprocess.TimeoutExpired):
            continue


def _alive_nodes(address: str, env: dict[str, str]) -> int:
    probe = f"import ray; ray.init(address='{address}'); print(len([n for n in ray.nodes() if n['Alive']]))"
    result = subprocess.run(
        [sys.executable, "-c", probe], env=env, capture_output=True, text=True, timeout=300
    )
    lines = result.stdout.strip().splitlines()
    return int(lines[-1]) if lines and lines[-1].isdigit() else 0


def _dataset(
    corpus: Path, out: Path, model: str, env: dict[str, str], *extra: str
) -> tuple[dict, str]:
    command = [
        sys.executable, "-m", "agir_retrain.flows.cli", "dataset", str(corpus / "runs"), "--out", str(out),
        "--base-model", model, "--work-dir", str(out.parent / f"{out.name}-work"),
        "--set", "shard_bytes=1048576", "--set", "garble.max_new_tokens=16", *extra,
    ]  # fmt: skip
    result = subprocess.run(command, cwd=ROOT, env=env, capture_output=True, text=True, timeout=900)
    assert result.returncode == 0, result.stdout[-3000:] + result.stderr[-3000:]
    return json.loads((out / "report.json").read_text()), result.stdout + result.stderr


@pytest.fixture
def two_node_cluster(tmp_path, prefect_database_template):
    env = _env(tmp_path)
    # The embedded Prefect server of each dataset run opens this home: a migrated database
    # spares the first one ~25 s of migrations.
    (tmp_path / "prefect-home").mkdir()
    shutil.copyfile(prefect_database_template, tmp_path / "prefect-home" / "prefect.db")
    port = _free_port()
    address = f"127.0.0.1:{port}"
    # Short: Ray's Unix socket paths under it must stay within 107 bytes.
    ray_dir = tempfile.mkdtemp(prefix="agir-ray-", dir="/tmp")
    common = ["--num-cpus=1", f"--temp-dir={ray_dir}", "--disable-usage-stats"]
    nodes = [
        _ray_node(
            ["--head", f"--port={port}", "--include-dashboard=false", *common],
            env,
            tmp_path / "head.log",
        )
    ]
    try:
        deadline = time.monotonic() + 420  # a loaded machine starts Ray slowly
        while not _listening(port):  # probing before the GCS listens only makes ray.init wait
            assert time.monotonic() < deadline, (tmp_path / "head.log").read_text()[-2000:]
            time.sleep(0.5)
        worker = [f"--address={address}", '--resources={"second_node": 1}', *common]
        nodes.append(_ray_node(worker, env, tmp_path / "worker.log"))
        while _alive_nodes(address, env) < 2:
            assert time.monotonic() < deadline, (tmp_path / "worker.log").read_text()[-2000:]
            if nodes[-1].poll() is not None:  # gave up on a slow head (RPC deadline): again
                nodes[-1] = _ray_node(worker, env, tmp_path / "worker.log")
            time.sleep(1)
        yield address, env
    finally:
        for node in reversed(nodes):
            _stop(node)
        shutil.rmtree(ray_dir, ignore_errors=True)


@pytest.mark.timeout(1800)  # two dataset builds and two Ray nodes on two shared cores
def test_cluster_output_equals_the_embedded_run(two_node_cluster, tiny_model, tmp_path):
    address, env = two_node_cluster
    assert _alive_nodes(address, env) == 2

    write_corpus(tmp_path / "corpus", runs=80, seed=41)
    on_cluster, cluster_log = _dataset(
        tmp_path / "corpus", tmp_path / "cluster", tiny_model, env, "--ray-address", address
    )
    assert on_cluster["shards"]["total"] > 1
    # Every shard logs the node it ran on; the work was shared, not all done by the head.
    placed = dict(re.findall(r"shard (\d{5}) built on Ray node ([0-9a-f]{16,})", cluster_log))
    assert len(placed) == on_cluster["shards"]["total"], cluster_log[-3000:]
    assert len(set(placed.values())) == 2, placed
    embedded, _ = _dataset(tmp_path / "corpus", tmp_path / "embedded", tiny_model, env)
    assert on_cluster["runs_by_class"] == embedded["runs_by_class"]
    for name in OUTPUTS:
        assert (tmp_path / "cluster" / name).read_bytes() == (
            tmp_path / "embedded" / name
        ).read_bytes(), name
