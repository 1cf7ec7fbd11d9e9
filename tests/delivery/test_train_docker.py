"""`agir-retrain train --backend docker` trains each objective for real, on an image made here.

No registry is reachable: the training image is built FROM a base imported from this
host's own Python and venv (``train_base_image``), once for the module; every objective's
job then reuses the same training image. Each job runs confined (not root, no network, no
capabilities), its outputs come back to ``out`` as the caller's, no container is left, and
the adapter reloads here. GRPO's episodes run in bwrap jails inside the job.
"""

from __future__ import annotations

import json
import os
import random
import shutil
import threading
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

import docker
import pytest

from agir_retrain.tasks.delivery.docker_jobs import (
    DEFAULT_USER,
    LABEL,
    NESTED_SANDBOX_OPTIONS,
    DockerJob,
    Mount,
    run_docker_job,
)
from agir_retrain.tasks.synth import text

pytestmark = [pytest.mark.integration, pytest.mark.slow]

STEPS = 2
LIMITS = {"wall_s": 5, "memory_mb": 256, "processes": 32, "file_size_mb": 4}
PROGRAM = "```python\nimport os\nos.remove('/var/cache/apt/archives/foo.deb')\n```"


def _write_rows(path: Path, rows: list[dict]) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text("".join(json.dumps(row) + "\n" for row in rows))


def _readable(source: str | Path, dest: Path) -> Path:
    """A copy the job's user can read: save_pretrained leaves 0600 files, mktemp 0700 folders."""
    shutil.copytree(source, dest)
    for path in [dest, *dest.rglob("*")]:
        path.chmod(0o755 if path.is_dir() else 0o644)
    return dest


@pytest.fixture(scope="module")
def model(tiny_model, tmp_path_factory) -> Path:
    return _readable(tiny_model, tmp_path_factory.mktemp("docker-model") / "tiny")


@pytest.fixture(scope="module")
def dataset(tmp_path_factory) -> Path:
    """One dataset folder as the dataset flow writes it: dpo/, sft/ and kto/ splits."""
    rng = random.Random(5)
    root = tmp_path_factory.mktemp("docker-data")
    rows = []
    for _ in range(6):
        strategy = text.strategy(rng)
        rows.append(
            {
                "prompt": [
                    {"role": "system", "content": "You are an agent freeing space in `/`."},
                    {"role": "user", "content": text.listing(rng, 80)},
                    {"role": "user", "content": text.CODE_REQUEST.format(strat=strategy)[:80]},
                ],
                "chosen": [{"role": "assistant", "content": text.fenced(text.code(rng))}],
                "rejected": [{"role": "assistant", "content": f"garbled {rng.random()}"}],
            }
        )
    _write_rows(root / "dpo" / "train.jsonl", rows[:4])
    _write_rows(root / "dpo" / "eval.jsonl", rows[4:])
    sft = [
        {"prompt": r["prompt"], "completion": r["chosen"], "prompt_kind": "code", "run_id": f"r{i}"}
        for i, r in enumerate(rows)
    ]
    _write_rows(root / "sft" / "train.jsonl", sft[:4])
    _write_rows(root / "sft" / "eval.jsonl", sft[4:])
    kto = [
        {
            "prompt": r["prompt"],
            "completion": r["chosen" if i % 2 else "rejected"],
            "label": i % 2 == 1,
        }
        for i, r in enumerate(rows)
    ]
    _write_rows(root / "kto" / "train.jsonl", kto)
    return root


@pytest.fixture(scope="module")
def grpo_inputs(tiny_model, tmp_path_factory) -> tuple[Path, Path, Path]:
    """(dataset, fitted model, scenario file) for GRPO: a model whose samples sometimes run.

    A random tiny model writes no program, so no episode would reach the sandbox; fitted
    briefly on one program that frees a junk file, its samples often hold a program.
    """
    import torch
    from transformers import AutoModelForCausalLM, AutoTokenizer

    from agir_retrain.tasks.environment.contract import FileKind, Scenario, ScenarioFile
    from agir_retrain.tasks.environment.scenario import scenario_to_json

    root = tmp_path_factory.mktemp("docker-grpo")
    scenario = root / "small.json"
    scenario.write_bytes(
        scenario_to_json(
            Scenario(
                name="small",
                seed=3,
                files=(
                    ScenarioFile(
                        path="/var/cache/apt/archives/foo.deb", bytes=3000, kind=FileKind.JUNK
                    ),
                    ScenarioFile(path="/tmp/scratch/tmp.bin", bytes=1000, kind=FileKind.JUNK),
                    ScenarioFile(path="/etc/app/app.conf", bytes=50, kind=FileKind.PROTECTED),
                ),
            )
        )
    )
    rows = [
        {
            "prompt": [{"role": "user", "content": f"Free space on the disk, task {i}."}],
            "completion": [{"role": "assistant", "content": PROGRAM}],
            "prompt_kind": "code",
            "run_id": f"r{i}",
        }
        for i in range(4)
    ]
    _write_rows(root / "data" / "sft" / "train.jsonl", rows)
    torch.manual_seed(0)
    tokenizer = AutoTokenizer.from_pretrained(tiny_model)
    fitted = AutoModelForCausalLM.from_pretrained(tiny_model, dtype=torch.float32)
    texts = [
        tokenizer.apply_chat_template(r["prompt"] + r["completion"], tokenize=False) for r in rows
    ]
    batch = tokenizer(texts, return_tensors="pt", padding=True)
    labels = batch["input_ids"].masked_fill(batch["attention_mask"] == 0, -100)
    optimizer = torch.optim.Adam(fitted.parameters(), lr=3e-3)
    for _ in range(60):
        fitted(**batch, labels=labels).loss.backward()
        optimizer.step()
        optimizer.zero_grad()
    fitted.save_pretrained(root / "fitted")
    tokenizer.save_pretrained(root / "fitted")
    return root / "data", _readable(root / "fitted", root / "fitted-readable"), scenario


@contextmanager
def watched_jobs() -> Iterator[list[dict]]:
    """The engine's own record of every job container that ran meanwhile (polled)."""
    client = docker.from_env()
    seen: dict[str, dict] = {}
    stop = threading.Event()

    def poll() -> None:
        while not stop.is_set():
            try:
                for job in client.containers.list(all=True, filters={"label": f"{LABEL}=job"}):
                    seen.setdefault(job.id, job.attrs)  # inspected: its whole configuration
            except docker.errors.NotFound:  # removed between the listing and the inspection
                pass
            stop.wait(0.3)

    watcher = threading.Thread(target=poll, daemon=True)
    watcher.start()
    found: list[dict] = []
    try:
        yield found
    finally:
        stop.set()
        watcher.join(timeout=30)
        found.extend(seen.values())
        client.close()


def _train(objective: str, data: Path, model: Path, out: Path, base: str, section: dict) -> None:
    from typer.testing import CliRunner

    from agir_retrain.flows.cli import app

    outcome = CliRunner().invoke(
        app,
        ["train", str(data), "--objective", objective, "--backend", "docker",
         "--base-model", str(model), "--out", str(out),
         "--set", f"submit.base_image={base}", "--set", "submit.memory_limit=8g",
         "--set", "submit.timeout_s=900", "--set", f"{objective}={json.dumps(section)}",
         *(["--set", "quantize=false"] if objective == "grpo" else [])],
    )  # fmt: skip
    assert outcome.exit_code == 0, outcome.output[-3000:]


def _check_job(objective: str, out: Path, model: Path, containers: list[dict]) -> dict:
    """What every objective's job must show; returns its metrics.json."""
    from agir_retrain.tasks.training.metrics import read_metrics
    from agir_retrain.tasks.training.model import load_adapter

    # confined as docker_jobs makes every job: not root, no network, no capabilities
    assert len(containers) == 1
    (job,) = containers
    caller = f"{os.getuid()}:{os.getgid()}"
    assert job["Config"]["User"] == (DEFAULT_USER if caller == "0:0" else caller)
    host = job["HostConfig"]
    assert host["NetworkMode"] == "none"
    assert host["CapDrop"] == ["ALL"]
    nested = list(NESTED_SANDBOX_OPTIONS) if objective == "grpo" else []
    assert host["SecurityOpt"] == ["no-new-privileges", *nested]
    assert host["Privileged"] is False
    # nothing is left on the engine
    client = docker.from_env()
    assert client.containers.list(all=True, filters={"label": LABEL}) == []
    # the outputs came back, the caller's
    assert (out / "adapter_model.safetensors").is_file()
    for path in [out, *out.rglob("*")]:
        assert (path.stat().st_uid, path.stat().st_gid) == (os.getuid(), os.getgid()), path
    metrics = read_metrics(out)
    assert metrics.objective == objective
    assert metrics.train.global_step == STEPS
    # the adapter reloads here, onto the same base, and computes
    import torch

    reloaded = load_adapter(str(model), out, quantize=objective != "grpo")
    ids = torch.tensor([[1, 2, 3, 4]])
    with torch.no_grad():
        assert torch.isfinite(reloaded(input_ids=ids).logits).all()
    return json.loads((out / "metrics.json").read_text())


SCHEDULE = {"max_steps": STEPS, "batch_size": 2, "max_length": 512, "save_steps": 100}


@pytest.mark.parametrize("objective", ["dpo", "sft", "kto"])
def test_an_objective_trains_in_a_docker_job(objective, dataset, model, train_base_image, tmp_path):
    with watched_jobs() as containers:
        _train(objective, dataset, model, tmp_path / "out", train_base_image, SCHEDULE)
    _check_job(objective, tmp_path / "out", model, containers)


def test_grpo_runs_its_episodes_in_bwrap_inside_the_docker_job(
    grpo_inputs, train_base_image, tmp_path
):
    data, fitted, scenario = grpo_inputs
    prompts, generations = 1, 4
    section = {
        "max_steps": STEPS, "batch_size": prompts, "num_generations": generations,
        "max_completion_length": 40, "max_prompt_length": 64, "scenarios": [str(scenario)],
        "workers": 2, "save_steps": 100, "environment": {"backend": "bwrap", "limits": LIMITS},
    }  # fmt: skip
    with watched_jobs() as containers:
        _train("grpo", data, fitted, tmp_path / "out", train_base_image, section)
    metrics = _check_job("grpo", tmp_path / "out", fitted, containers)
    steps = [row for row in metrics["log_history"] if "episodes/run" in row]
    # every completion ran as an episode, and some programs ran: the jail works in the job
    assert steps[-1]["episodes/run"] == prompts * generations * STEPS
    assert max(row["episodes/ran_share"] for row in steps) > 0


PROBE = """
import json, socket, sys
from pathlib import Path
from agir_retrain.tasks.environment.sandbox import SandboxError, SandboxLimits

server = socket.socket()
server.bind(("127.0.0.1", 0))
server.listen()
port = server.getsockname()[1]
seen = {}
with socket.create_connection(("127.0.0.1", port), timeout=2):
    seen["job"] = "connected"  # the job itself reaches its own loopback server
try:
    from agir_retrain.tasks.environment.sandbox_bwrap import BwrapSandbox
    sandbox = BwrapSandbox()
except SandboxError as exc:
    seen["jail"] = f"no jail: {exc}"
else:
    program = (
        "import socket\\n"
        "try:\\n"
        f"    socket.create_connection(('127.0.0.1', {port}), timeout=2).close()\\n"
        "    print('connected')\\n"
        "except OSError as exc:\\n"
        "    print(type(exc).__name__)\\n"
    )
    with sandbox.session(program, SandboxLimits(wall_s=10, disk_bytes=1 << 20)) as jail:
        result = jail.run()
    seen["jail"] = result.stdout_tail.strip() or result.stderr_tail.strip()
Path("/out/seen.json").write_text(json.dumps(seen))
"""


@pytest.mark.parametrize("nested", [True, False])
def test_a_jail_in_a_grpo_job_cannot_reach_the_jobs_loopback(nested, train_base_image, tmp_path):
    """With the nested-sandbox options the jail runs and has no network; without, no jail."""
    from agir_retrain.tasks.delivery.package_data import write_build_context

    context = write_build_context(tmp_path / "ctx")
    (context / "probe.py").write_text(PROBE)
    (context / "Dockerfile").write_text(
        f"FROM {train_base_image}\nCOPY agir_retrain /app/agir_retrain\nCOPY probe.py /probe.py\n"
        'ENV PYTHONPATH=/app\nENTRYPOINT ["python", "/probe.py"]\n'
    )
    job = DockerJob(
        context=context,
        repository="agir-retrain-probe",
        mounts=(Mount(host=tmp_path / "out", container="/out", read_only=False),),
        memory_limit="2g",
        timeout_s=300,
        nested_sandbox=nested,
    )
    run_docker_job(job)
    seen = json.loads((tmp_path / "out" / "seen.json").read_text())
    assert seen["job"] == "connected"
    if nested:
        assert seen["jail"] == "ConnectionRefusedError"  # its own empty loopback, not the job's
    else:
        assert seen["jail"].startswith("no jail: bubblewrap cannot run a program here")


GRPO_EPISODES = r"""
import json, os
from pathlib import Path
from agir_retrain.tasks.environment.contract import FileKind, Scenario, ScenarioFile
from agir_retrain.tasks.settings.environment import EnvironmentSettings
from agir_retrain.tasks.training.grpo import EpisodeReward

PROGRAMS = [
    "import os\nos.remove('/var/cache/apt/archives/foo.deb')",  # honest
    "import os, time\nif os.fork() == 0:\n    os.setsid()\n    time.sleep(60)",  # a daemon
    "import os\nwhile True:\n    try:\n        os.fork()\n    except OSError:\n        break",  # a bomb
    "raise SystemExit(3)",
    "import subprocess\nsubprocess.run(['sh', '-c', 'sleep 0.1 & sleep 0.1 & wait'])",
]
scenario = Scenario(name="small", seed=3, files=(
    ScenarioFile(path="/var/cache/apt/archives/foo.deb", bytes=3000, kind=FileKind.JUNK),
    ScenarioFile(path="/etc/app/app.conf", bytes=50, kind=FileKind.PROTECTED),
))
settings = EnvironmentSettings(limits={"wall_s": 3, "memory_mb": 256, "processes": 16,
                                       "file_size_mb": 4, "disk_mb": 8, "inodes": 500})
reward = EpisodeReward({"small": scenario}, settings, workers=2)
texts = [f"```python\n{PROGRAMS[i % len(PROGRAMS)]}\n```" for i in range(200)]
rewards = []
for start in range(0, 200, 20):  # ten GRPO steps of 20 completions
    batch = texts[start:start + 20]
    rewards += reward(prompts=[""] * 20, completions=batch, task_id=["t"] * 20, scenario=["small"] * 20)
zombies = []
for pid in os.listdir("/proc"):
    try:
        if pid.isdigit() and open(f"/proc/{pid}/stat").read().rsplit(")", 1)[1].split()[0] == "Z":
            zombies.append(pid)
    except OSError:
        pass
Path("/out/seen.json").write_text(json.dumps({
    "rewards": rewards, "episodes": reward.episodes, "harness": reward.harness_failures,
    "zombies": zombies, "pid1": open("/proc/1/cmdline").read().split("\0")[0],
}))
"""


@pytest.mark.parametrize("init", [True, False], ids=["docker-init", "no-init"])
def test_a_grpo_job_plays_200_episodes_with_no_zombie_and_no_harness_error(
    init, train_base_image, tmp_path
):
    """GRPO's reward function in a docker job, under a tight pids limit: 200 episodes, none
    the harness's, and no zombie left. Each layer alone suffices: the job's init (pid 1
    reaps), and the harness (a subreaper that reaps its jails' inits) under a pid 1 that
    never reaps, as `accelerate launch` is."""
    import logging
    import time

    from agir_retrain.tasks.delivery.package_data import write_build_context

    context = write_build_context(tmp_path / "ctx")
    (context / "probe.py").write_text(GRPO_EPISODES)
    (context / "Dockerfile").write_text(
        f"FROM {train_base_image}\nCOPY agir_retrain /app/agir_retrain\nCOPY probe.py /probe.py\n"
        'ENV PYTHONPATH=/app\nENTRYPOINT ["python", "/probe.py"]\n'
    )
    job = DockerJob(
        context=context,
        repository="agir-retrain-probe",
        mounts=(Mount(host=tmp_path / "out", container="/out", read_only=False),),
        memory_limit="4g",
        pids_limit=256,  # zombies left by every episode would exhaust it within the run
        timeout_s=600,
        nested_sandbox=True,
        init=init,
    )
    start = time.monotonic()
    run_docker_job(job)
    seconds = time.monotonic() - start
    seen = json.loads((tmp_path / "out" / "seen.json").read_text())
    logging.getLogger(__name__).warning(
        "200 episodes in a docker job (init=%s): %.0f s in all", init, seconds
    )
    assert seen["episodes"] == 200
    assert seen["harness"] == 0
    assert None not in seen["rewards"]
    assert max(seen["rewards"]) > 0  # the honest program earned
    assert seen["zombies"] == []
    assert seen["pid1"].endswith("docker-init") is init
