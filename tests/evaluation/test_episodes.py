"""Episodes fanned out per task: local processes and Ray give the same rows, in one order."""

from __future__ import annotations

import dataclasses
from pathlib import Path

import orjson
import pytest

from agir_retrain.tasks.environment.contract import (
    Completion,
    EvalTask,
    FileKind,
    Scenario,
    ScenarioFile,
)
from agir_retrain.tasks.environment.scenario import ScenarioError
from agir_retrain.tasks.evaluation.episodes import (
    episode_groups,
    resolve_scenarios,
    run_groups_locally,
)
from agir_retrain.tasks.settings.environment import EnvironmentSettings

SCENARIO = Scenario(
    name="pair",
    seed=1,
    files=(
        ScenarioFile(path="/tmp/a.tmp", bytes=2000, kind=FileKind.JUNK),
        ScenarioFile(path="/var/cache/b.bin", bytes=2000, kind=FileKind.JUNK),
        ScenarioFile(path="/etc/keep.conf", bytes=100, kind=FileKind.PROTECTED),
    ),
)
REMOVE_A = "```python\nimport os\nos.remove('/tmp/a.tmp')\n```"
REMOVE_BOTH = "```python\nimport os\nos.remove('/tmp/a.tmp')\nos.remove('/var/cache/b.bin')\n```"


@pytest.fixture(scope="module")
def settings() -> EnvironmentSettings:
    from agir_retrain.tasks.environment.sandbox import SandboxError
    from agir_retrain.tasks.environment.sandbox_bwrap import BwrapSandbox

    try:
        BwrapSandbox()
    except SandboxError as exc:
        pytest.skip(f"bubblewrap cannot run here: {exc}")
    return EnvironmentSettings(limits={"wall_s": 5})


def groups():
    tasks = [
        EvalTask(task_id=f"t{i}", prompt=({"role": "user", "content": "x"},), scenario="pair")
        for i in range(3)
    ]
    completions = [
        Completion(
            task_id=t.task_id, model=m, sample=s, completion=REMOVE_A if m == "a" else REMOVE_BOTH
        )
        for t in reversed(tasks)
        for m in ("b", "a")
        for s in (1, 0)
    ]
    return episode_groups(tasks, completions, {"pair": SCENARIO})


def key_fields(episodes):
    return [dataclasses.replace(e, seconds=0.0) for e in episodes]


def test_groups_are_per_task_sorted() -> None:
    found = groups()
    assert [g.task_id for g in found] == ["t0", "t1", "t2"]
    assert [(c.model, c.sample) for c in found[0].completions] == [
        ("a", 0), ("a", 1), ("b", 0), ("b", 1),
    ]  # fmt: skip


@pytest.mark.slow
def test_local_pool_runs_every_episode_in_canonical_order(settings) -> None:
    done: list[int] = []
    episodes = run_groups_locally(groups(), settings, workers=2, on_done=done.append)
    assert sum(done) == 12
    assert [(e.model, e.task_id, e.sample) for e in episodes] == [
        (m, t, s) for m in ("a", "b") for t in ("t0", "t1", "t2") for s in (0, 1)
    ]
    assert {e.freed_share for e in episodes if e.model == "a"} == {0.5}
    assert {e.freed_share for e in episodes if e.model == "b"} == {1.0}
    assert all(e.success for e in episodes)
    # One worker in this process gives the same rows.
    assert key_fields(run_groups_locally(groups(), settings, workers=1)) == key_fields(episodes)


@pytest.mark.slow
@pytest.mark.integration
def test_ray_gives_the_local_rows(settings, local_ray) -> None:
    from agir_retrain.tasks.ray_pool import run_episode_groups_on_ray

    done: list[int] = []
    on_ray = run_episode_groups_on_ray(groups(), settings, done.append)
    assert sum(done) == 12
    assert key_fields(on_ray) == key_fields(run_groups_locally(groups(), settings, workers=1))


def test_scenario_paths_resolve_beside_the_tasks_file(tmp_path: Path) -> None:
    (tmp_path / "s.json").write_bytes(
        orjson.dumps(
            {"name": "s", "seed": 0, "files": [{"path": "/tmp/x", "bytes": 10, "kind": "junk"}]}
        )
    )
    tasks = [EvalTask(task_id="t", prompt=(), scenario="s.json")]
    assert resolve_scenarios([t.scenario for t in tasks], str(tmp_path))["s.json"].name == "s"
    with pytest.raises(ScenarioError, match=r"s\.json"):
        resolve_scenarios([t.scenario for t in tasks], str(tmp_path / "elsewhere"))
