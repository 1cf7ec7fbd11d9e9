"""The deployments on a real Prefect server on 127.0.0.1, with a process work pool and worker."""

from __future__ import annotations

import json
import os
import socket
import subprocess
import sys
import time
import urllib.request
from pathlib import Path

import pytest
import yaml

from agir_retrain.tasks.delivery.archive import verify_archive
from agir_retrain.tasks.synth.corpus import write_corpus

pytestmark = [pytest.mark.integration, pytest.mark.slow]
ROOT = Path(__file__).resolve().parents[2]
PREFECT = [sys.executable, "-m", "prefect"]


def _free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return probe.getsockname()[1]


def _run(
    command: list[str], env: dict[str, str], timeout: float = 300
) -> subprocess.CompletedProcess:
    result = subprocess.run(
        command, cwd=ROOT, env=env, capture_output=True, text=True, timeout=timeout
    )
    assert result.returncode == 0, f"{command}: {result.stdout[-3000:]}{result.stderr[-3000:]}"
    return result


@pytest.fixture(scope="module")
def server(tmp_path_factory):
    """A Prefect server, a process work pool, the deployments, and a worker polling the pool."""
    home = tmp_path_factory.mktemp("prefect-server")
    port = _free_port()
    api = f"http://127.0.0.1:{port}/api"
    env = {k: v for k, v in os.environ.items() if not k.startswith(("PREFECT_", "RAY_ADDRESS"))} | {
        "PREFECT_HOME": str(home),
        "PREFECT_API_URL": api,
        "PREFECT_SERVER_ANALYTICS_ENABLED": "false",
        "PREFECT_WORKER_QUERY_SECONDS": "2",
        "PREFECT_LOGGING_EXTRA_LOGGERS": "agir_retrain",
        "AGIR_PROJECT_DIR": str(ROOT),
        "AGIR_CACHE_DIR": str(home / "cache"),
        "RAY_AUTH_MODE": "disabled",
        "HF_HUB_OFFLINE": "1",
    }
    processes = []
    log = open(home / "server.log", "wb")
    processes.append(
        subprocess.Popen(
            [*PREFECT, "server", "start", "--host", "127.0.0.1", "--port", str(port)],
            env=env,
            stdout=log,
            stderr=log,
        )
    )
    deadline = time.monotonic() + 240  # a fresh database is migrated first
    while True:
        try:
            with urllib.request.urlopen(f"{api}/health", timeout=2) as response:
                if response.status == 200:
                    break
        except OSError:
            pass
        assert time.monotonic() < deadline, (home / "server.log").read_text()[-3000:]
        time.sleep(1)
    try:
        _run([*PREFECT, "work-pool", "create", "agir-cpu", "--type", "process"], env)
        _run([*PREFECT, "--no-prompt", "deploy", "--name", "retrain", "--name", "train-cpu"], env)
        worker_log = open(home / "worker.log", "wb")
        processes.append(
            subprocess.Popen(
                [*PREFECT, "worker", "start", "--pool", "agir-cpu", "--type", "process"],
                env=env,
                stdout=worker_log,
                stderr=worker_log,
                cwd=ROOT,
            )
        )
        yield env, home
    finally:
        for process in reversed(processes):
            process.terminate()
            try:
                process.wait(timeout=30)
            except subprocess.TimeoutExpired:
                process.kill()


def test_retrain_deployment_completes_and_its_archive_verifies(server, tiny_model, tmp_path):
    env, home = server
    write_corpus(tmp_path / "corpus", runs=40, seed=51)
    config = {
        "inputs": [str(tmp_path / "corpus" / "runs")],
        "out": str(tmp_path / "out"),
        "base_model": tiny_model,
        "build": {"garble": {"max_new_tokens": 16}},
        "train": {"dpo": {"max_steps": 2, "max_length": 512, "gradient_accumulation": 1}},
    }
    result = subprocess.run(
        [*PREFECT, "deployment", "run", "retrain/retrain", "--params", json.dumps({"config": config}), "--watch", "--watch-timeout", "600"],
        cwd=ROOT, env=env, capture_output=True, text=True, timeout=700,
    )  # fmt: skip
    logs = (home / "worker.log").read_text()[-4000:]
    assert result.returncode == 0, result.stdout[-3000:] + result.stderr[-2000:] + logs
    assert "Completed" in result.stdout
    archives = sorted((tmp_path / "out" / "archives").glob("*.tar.gz"))
    assert len(archives) == 1
    assert verify_archive(str(archives[0])).ok
    assert (tmp_path / "out" / "adapter" / "adapter_model.safetensors").is_file()
    report = json.loads((tmp_path / "out" / "dataset" / "report.json").read_text())
    assert report["runs_in"] == 40
    artifacts = _artifacts(env["PREFECT_API_URL"])
    keys = {artifact["key"] for artifact in artifacts}
    assert {
        "build-dataset-report",
        "training-metrics",
        "retrain-archive",
        "retrain-summary",
        "training-curves",
    } <= keys
    # Every plot renders in the UI (served over http): inline PNGs, never file:// images.
    for artifact in artifacts:
        assert "file://" not in str(artifact.get("data")), artifact["key"]
        assert artifact["type"] != "image", artifact["key"]
    (curves,) = [a for a in artifacts if a["key"] == "training-curves"]
    assert curves["type"] == "markdown"
    assert (
        curves["data"].count("](data:image/png;base64,iVBORw0KGgo") == 3
    )  # loss, accuracy, margin


def _artifacts(api: str) -> list[dict]:
    request = urllib.request.Request(
        f"{api}/artifacts/filter",
        data=b"{}",
        headers={"Content-Type": "application/json"},
        method="POST",
    )
    with urllib.request.urlopen(request, timeout=30) as response:
        return json.loads(response.read())


def test_train_through_the_prefect_backend_fetches_outputs(server, tiny_model, tmp_path):
    env, _ = server
    dataset = tmp_path / "dataset"
    (dataset / "dpo").mkdir(parents=True)
    row = {
        "prompt": [{"role": "user", "content": "Free some space in /var/log."}],
        "chosen": [{"role": "assistant", "content": "```python\nimport os\nprint('ok')\n```"}],
        "rejected": [{"role": "assistant", "content": "rm -rf /"}],
    }
    (dataset / "dpo" / "train.jsonl").write_text(
        "\n".join(json.dumps(row) for _ in range(8)) + "\n"
    )
    command = [
        sys.executable, "-m", "agir_retrain.flows.cli", "train", str(dataset), "--base-model", tiny_model,
        "--out", str(tmp_path / "adapter"), "--backend", "prefect", "--max-steps", "2",
        "--set", "submit.deployment=train/train-cpu", "--set", "submit.work_pool_type=process",
        "--set", f"submit.shared_storage=file://{tmp_path / 'shared'}", "--set", "dpo.gradient_accumulation=1",
    ]  # fmt: skip
    (dataset / "pairs.parquet").write_bytes(b"bulk the job never reads")
    result = subprocess.run(command, cwd=ROOT, env=env, capture_output=True, text=True, timeout=700)
    assert result.returncode == 0, result.stdout[-3000:] + result.stderr[-3000:]
    assert (tmp_path / "adapter" / "adapter_model.safetensors").is_file()
    assert (
        json.loads((tmp_path / "adapter" / "metrics.json").read_text())["train"]["global_step"] == 2
    )
    # The worker trained on the copy shipped to shared storage, not on this machine's folder.
    trained_on = yaml.safe_load((tmp_path / "adapter" / "train_config.yaml").read_text())
    shipped = Path(trained_on["dataset"])
    assert shipped.is_relative_to(tmp_path / "shared"), trained_on["dataset"]
    assert shipped.read_bytes() == (dataset / "dpo" / "train.jsonl").read_bytes()
    assert sorted(p.name for p in shipped.parent.iterdir()) == ["train.jsonl"]


def test_a_failed_deployment_reaches_the_caller_with_its_own_error(server, tiny_model, tmp_path):
    env, _ = server
    (tmp_path / "dataset").mkdir()
    (tmp_path / "dataset" / "train.jsonl").write_text(
        '{"prompt": "p", "chosen": "c"}\n'
    )  # no rejected
    command = [
        sys.executable, "-m", "agir_retrain.flows.cli", "train", str(tmp_path / "dataset"), "--base-model", tiny_model,
        "--out", str(tmp_path / "adapter"), "--backend", "prefect",
        "--set", "submit.deployment=train/train-cpu", "--set", "submit.work_pool_type=process",
        "--set", f"submit.shared_storage=file://{tmp_path / 'shared'}",
    ]  # fmt: skip
    result = subprocess.run(command, cwd=ROOT, env=env, capture_output=True, text=True, timeout=700)
    assert result.returncode == 2
    assert "missing column" in result.stdout + result.stderr
