"""The deployments on a real Prefect server on 127.0.0.1, with a process work pool and worker."""

from __future__ import annotations

import json
import os
import shutil
import socket
import subprocess
import sys
import time
import urllib.request
from pathlib import Path

import pytest
import yaml

from agir_retrain.tasks.delivery.archive import (
    create_archive,
    dataset_hash,
    read_archive,
    verify_archive,
)
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
def server(tmp_path_factory, prefect_database_template):
    """A Prefect server, a process work pool, the deployments, and a worker polling the pool."""
    home = tmp_path_factory.mktemp("prefect-server")
    # A database this Prefect migrated, no run in it: the server skips ~25 s of migrations.
    shutil.copyfile(prefect_database_template, home / "prefect.db")
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
    deadline = time.monotonic() + 240  # a loaded machine starts it slowly
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


def _objective_dataset(root: Path) -> dict[str, Path]:
    """A dataset folder laid out as the dataset flow writes it (every objective's split, bulk),
    a general chat file for SFT's rehearsal, and a scenario file for GRPO."""
    from agir_retrain.tasks.environment.profiles import build_profile
    from agir_retrain.tasks.environment.scenario import scenario_to_json

    def write(path: Path, rows: list[dict]) -> Path:
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text("".join(json.dumps(row) + "\n" for row in rows))
        return path

    prompt = [{"role": "user", "content": "Free some space in /var/cache."}]
    good = [{"role": "assistant", "content": "```python\nimport os\nprint('ok')\n```"}]
    bad = [{"role": "assistant", "content": "rm -rf /"}]
    dataset = root / "dataset"
    pair = {"prompt": prompt, "chosen": good, "rejected": bad}
    write(dataset / "dpo" / "train.jsonl", [pair] * 4)
    sft = [
        {"prompt": prompt, "completion": good, "prompt_kind": "code", "run_id": f"r{i}"}
        for i in range(4)
    ]
    write(dataset / "sft" / "train.jsonl", sft)
    write(dataset / "sft" / "eval.jsonl", sft[:2])
    kto = [{"prompt": prompt, "completion": c, "label": c is good} for c in (good, bad) * 2]
    write(dataset / "kto" / "train.jsonl", kto)
    write(dataset / "kto" / "eval.jsonl", kto[:2])
    (dataset / "pairs.parquet").write_bytes(b"bulk the job never reads")
    chat = [{"role": "user", "content": "Say hello."}, {"role": "assistant", "content": "Hello."}]
    scenario = root / "small.json"
    scenario.write_bytes(scenario_to_json(build_profile("debian-like")))
    return {
        "dataset": dataset,
        "rehearsal": write(root / "chat.jsonl", [{"messages": chat}] * 4),
        "scenario": scenario,
    }


# Per objective: the settings that keep one job short, the files it must have been given
# (shipped name -> source), and the settings that name them in the config the worker ran.
OBJECTIVE_JOBS = {
    "sft": (
        ["sft.gradient_accumulation=1", "sft.batch_size=2", "sft.max_length=256",
         "sft.rehearsal_share=0.5", "sft.rehearsal_file={rehearsal}"],
        {"train.jsonl": "sft/train.jsonl", "eval.jsonl": "sft/eval.jsonl",
         "rehearsal.jsonl": "rehearsal"},
    ),
    "kto": (
        ["kto.gradient_accumulation=1", "kto.batch_size=2", "kto.max_length=256"],
        {"train.jsonl": "kto/train.jsonl", "eval.jsonl": "kto/eval.jsonl"},
    ),
    "grpo": (
        # Two samples of 16 tokens per prompt, one prompt a step, each run in the sandbox.
        ["grpo.num_generations=2", "grpo.max_completion_length=16", "grpo.max_prompt_length=64",
         "grpo.batch_size=1", "grpo.gradient_accumulation=1", "grpo.workers=1",
         "grpo.scenarios=[\"{scenario}\"]", "grpo.environment.backend=bwrap",
         "grpo.environment.limits.wall_s=5"],
        {"train.jsonl": "sft/train.jsonl", "scenarios/0-small.json": "scenario"},
    ),
}  # fmt: skip


@pytest.mark.parametrize("objective", ["sft", "kto", "grpo"])
def test_every_objective_trains_through_the_prefect_backend_on_its_own_files(
    server, tiny_model, tmp_path, objective
):
    from agir_retrain.tasks.training.model import load_adapter

    if objective == "grpo" and not Path("/usr/bin/bwrap").exists():
        pytest.skip("GRPO's reward runs programs in bubblewrap, which is not installed")
    env, home = server
    files = _objective_dataset(tmp_path)
    settings, shipped = OBJECTIVE_JOBS[objective]
    steps = 2
    command = [
        sys.executable, "-m", "agir_retrain.flows.cli", "train", str(files["dataset"]),
        "--objective", objective, "--base-model", tiny_model, "--out", str(tmp_path / "adapter"),
        "--backend", "prefect", "--max-steps", str(steps),
        "--set", "submit.deployment=train/train-cpu", "--set", "submit.work_pool_type=process",
        "--set", f"submit.shared_storage=file://{tmp_path / 'shared'}",
    ]  # fmt: skip
    for setting in settings:
        command += ["--set", setting.format(**{k: str(v) for k, v in files.items()})]
    result = subprocess.run(command, cwd=ROOT, env=env, capture_output=True, text=True, timeout=700)
    logs = (home / "worker.log").read_text()[-3000:]
    assert result.returncode == 0, result.stdout[-3000:] + result.stderr[-3000:] + logs
    out = tmp_path / "adapter"
    assert (out / "adapter_model.safetensors").is_file()
    metrics = json.loads((out / "metrics.json").read_text())
    assert (metrics["objective"], metrics["train"]["global_step"]) == (objective, steps)

    # The worker read the copies shipped to shared storage: exactly this objective's files.
    trained_on = yaml.safe_load((out / "train_config.yaml").read_text())
    copies = Path(trained_on["dataset"]).parent
    assert copies.is_relative_to(tmp_path / "shared"), trained_on["dataset"]
    found = sorted(p.relative_to(copies).as_posix() for p in copies.rglob("*") if p.is_file())
    assert found == sorted(shipped)
    for name, source in shipped.items():
        original = files[source] if source in files else files["dataset"] / source
        assert (copies / name).read_bytes() == original.read_bytes(), name
    named = {
        "sft": [trained_on["dataset"], trained_on["eval_dataset"], trained_on["sft"]["rehearsal_file"]],
        "kto": [trained_on["dataset"], trained_on["eval_dataset"]],
        "grpo": [trained_on["dataset"], *trained_on["grpo"]["scenarios"]],
    }[objective]  # fmt: skip
    assert named == [str(copies / name) for name in shipped]
    assert metrics["data"]["train_file"] == str(copies / "train.jsonl")
    if objective == "sft":  # 4 task rows, and the rehearsal rows at 0.5 a row mixed in
        assert metrics["data"]["train"]["rows_in"] == 4 + 2
    if objective == "grpo":  # every sampled program ran in the shipped scenario
        episodes = [row["episodes/run"] for row in metrics["log_history"] if "episodes/run" in row]
        assert episodes == [2.0, 4.0]  # 1 prompt x 2 generations, each step

    model = load_adapter(tiny_model, out, quantize=trained_on["quantize"])
    assert any("lora_" in name for name, _ in model.named_parameters())
    # The fetched outputs archive as the retrain flow archives them, with this split's hash.
    archive = create_archive(out, str(tmp_path / "archives"), dataset=files["dataset"])
    assert verify_archive(archive).ok
    assert json.loads(read_archive(archive)["MANIFEST.json"])["dataset_sha256"] == dataset_hash(
        files["dataset"], objective
    )


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
