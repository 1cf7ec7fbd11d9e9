"""`improve`: generations on the tiny model, end to end, killed halfway and resumed; the plan."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

from agir_retrain.tasks.improve import plan
from agir_retrain.tasks.settings.improve import ImproveConfig

# Small enough for the suite: 3 training scenarios, 2 held-out ones, 2 training steps.
SMALL = [
    "--set", "scenarios=3", "--set", "heldout.scenarios=2", "--set", "heldout.samples=1",
    "--set", "heldout.max_new_tokens=24", "--set", "collect.max_new_tokens=24",
    "--set", "collect.max_attempts=1", "--set", "build.garble.max_new_tokens=12",
    "--set", "build.garble.min_new_tokens=4", "--set", "environment.limits.wall_s=5",
]  # fmt: skip


class TestPlan:
    def test_each_stage_gets_its_generations_inputs_and_outputs(self, tmp_path):
        config = ImproveConfig(out=str(tmp_path), base_model="m", start="reference", scenarios=5)
        zero, two = plan.collect_config(config, 0), plan.collect_config(config, 2)
        assert (zero.policy, zero.model_name, zero.adapter) == ("reference", "reference", None)
        assert (two.policy, two.model_name) == ("model", "gen2")
        assert two.adapter == str(tmp_path / "gen-2" / "adapter")
        assert two.scenario_refs() == [f"gen-{i}" for i in range(5)]
        assert two.strategies == "given"
        build = plan.build_config(config, 1)
        assert build.inputs == [str(tmp_path / "gen-1" / "collect" / "runs")]
        assert build.produced_by == str(tmp_path / "gen-1" / "adapter")
        assert plan.build_config(config, 0).producer_evaluation is None  # not a model
        train = plan.train_config(config, 2)
        assert train.generations.datasets == [
            str(tmp_path / f"gen-{n}" / "dataset") for n in (0, 1)
        ]
        assert train.out == str(tmp_path / "gen-2" / "adapter")
        assert "reference agent" in plan.learned_from(config, 2)

    def test_a_stage_is_finished_once_its_time_is_recorded_not_when_its_files_are(self, tmp_path):
        from agir_retrain.tasks.improve.assemble import record_stage

        config = ImproveConfig(out=str(tmp_path), base_model="m", scenarios=2)
        one = plan.paths(config, 1)
        Path(one.eval).mkdir(parents=True)
        Path(one.eval, "eval.json").write_text("{}")  # killed after the output, before the time
        assert not one.finished("evaluate")
        record_stage(config, 1, "evaluate", 2.04)
        record_stage(config, 1, "sample", 7.0)
        assert one.finished("evaluate")
        assert one.finished("sample")
        assert not one.finished("train")
        assert one.stage_seconds() == {"evaluate": 2.0, "sample": 7.0}
        assert plan.paths(config, 0).finished("train")  # generation 0 is the base
        with pytest.raises(ValueError, match="unknown stage 'judge'"):
            one.finished("judge")

    def test_held_out_seeds_never_overlap_the_training_ones(self):
        with pytest.raises(ValueError, match="overlap the training seeds"):
            ImproveConfig(scenarios=50, heldout={"first_seed": 40})
        with pytest.raises(ValueError, match="draws its training scenarios itself"):
            ImproveConfig(collect={"generated": 3})


def _improve(out: Path, *args: str) -> subprocess.Popen:
    from prefect.settings import PREFECT_API_URL

    env = os.environ | {"PREFECT_API_URL": PREFECT_API_URL.value(), "COLUMNS": "240"}
    env.pop("RAY_ADDRESS", None)
    command = [sys.executable, "-m", "agir_retrain.flows.cli", "improve", "--out", str(out)]
    return subprocess.Popen(
        [*command, *args, *SMALL],
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
        env=env,
        start_new_session=True,  # so that killing it takes its Ray and training children too
    )


def _wait_for(path: Path, process: subprocess.Popen, timeout_s: float) -> None:
    deadline = time.monotonic() + timeout_s
    while not path.exists():
        if process.poll() is not None:
            pytest.fail(f"improve ended before {path} appeared:\n{process.stdout.read()}")
        if time.monotonic() > deadline:
            os.killpg(process.pid, signal.SIGKILL)
            pytest.fail(f"{path} did not appear in {timeout_s} s")
        time.sleep(1)


@pytest.mark.slow
@pytest.mark.integration
def test_two_generations_killed_halfway_resume_to_the_end(tmp_path, tiny_model, prefect_server):
    out = tmp_path / "improve"
    args = ("--generations", "2", "--start", "reference", "--objective", "kto")
    args += ("--base-model", tiny_model, "--set", "train.kto.max_steps=2")
    first = _improve(out, *args)
    _wait_for(out / "gen-1" / "eval" / "eval.json", first, timeout_s=900)
    os.killpg(first.pid, signal.SIGKILL)  # mid generation 1: collecting or building
    first.wait(timeout=60)
    finished = {
        name: (out / name).stat().st_mtime_ns
        for name in ("gen-0/dataset/report.json", "gen-1/adapter/metrics.json")
    }

    again = _improve(out, *args)
    output, _ = again.communicate(timeout=900)
    assert again.returncode == 0, output
    for name, mtime in finished.items():  # finished stages are not run again
        assert (out / name).stat().st_mtime_ns == mtime, name

    report = json.loads((out / "improve.json").read_text())
    assert [row["model"] for row in report["rows"]] == ["base", "gen1", "gen2"]
    assert report["stopped_early"] is None
    assert report["rows"][1]["learned_from"] == "gen 0 runs (reference agent)"
    assert report["rows"][0]["collected"]["first_try"] > 0  # the reference agent's runs
    assert report["rows"][1]["train_seconds"] > 0
    assert report["rows"][1]["peak_memory_bytes"] > 100 << 20  # the training process's RSS
    assert set(report["rows"][1]["stage_seconds"]) == {
        "train", "sample", "evaluate", "collect", "build"
    }  # fmt: skip
    lineage = json.loads((out / "gen-2" / "adapter" / "lineage.json").read_text())
    assert [g["dataset"] for g in lineage["generations"]] == [
        str(out / "gen-0" / "dataset"),
        str(out / "gen-1" / "dataset"),
    ]
    assert all(g["selected"] for g in lineage["generations"])
    evaluation = json.loads((out / "gen-2" / "eval" / "eval.json").read_text())
    assert set(evaluation["models"]) == {"base", "gen1", "gen2"}
    assert {(d["model"], d["baseline"]) for d in evaluation["differences"]} >= {
        ("gen1", "base"),
        ("gen2", "base"),
    }
    assert "## Generations" in (out / "gen-2" / "adapter" / "README.md").read_text()
    assert (out / "improve.png").read_bytes().startswith(b"\x89PNG")
    assert "held-out tasks" in output

    from prefect.client.orchestration import get_client
    from prefect.client.schemas.filters import ArtifactFilter, ArtifactFilterKey

    async def artifacts():
        async with get_client() as client:
            return await client.read_artifacts(
                artifact_filter=ArtifactFilter(key=ArtifactFilterKey(any_=["improve-generations"]))
            )

    import asyncio

    assert any("gen2" in (a.data or "") for a in asyncio.run(artifacts()))


@pytest.mark.slow
@pytest.mark.integration
def test_a_generation_with_nothing_to_learn_from_stops_the_loop(
    tmp_path, tiny_model, prefect_server
):
    """The tiny base frees nothing by itself: SFT has no row to learn from, and the loop says so."""
    out = tmp_path / "improve"
    process = _improve(out, "--generations", "2", "--objective", "sft", "--base-model", tiny_model)
    output, _ = process.communicate(timeout=900)
    assert process.returncode == 0, output
    report = json.loads((out / "improve.json").read_text())
    assert [row["model"] for row in report["rows"]] == ["base"]
    assert "no rows for sft to learn from" in report["stopped_early"]
    assert "stopped early" in output
    assert not (out / "gen-1" / "adapter").exists()
