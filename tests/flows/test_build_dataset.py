"""The build-dataset flow on a real Prefect server and a local Ray, with the tiny model."""

from __future__ import annotations

import asyncio
import json
import shutil
import threading
import time
from pathlib import Path
from typing import NamedTuple
from uuid import UUID

import psutil
import pytest
from datasets import load_dataset
from prefect import get_client
from prefect.client.schemas.filters import (
    ArtifactFilter,
    ArtifactFilterFlowRunId,
    FlowRunFilter,
    FlowRunFilterId,
)

from agir_retrain.flows.build_dataset import build_dataset
from agir_retrain.flows.runtime import ray_task_runner
from agir_retrain.tasks.settings.models import BuildDatasetConfig, ExportSettings, GarbleSettings
from agir_retrain.tasks.synth.corpus import write_corpus

pytestmark = [pytest.mark.integration, pytest.mark.slow]
OUTPUTS = (
    "runs.parquet", "scored.parquet", "pairs.parquet", "quarantine.jsonl",
    "dpo/train.jsonl", "dpo/eval.jsonl", "kto/train.jsonl",
)  # fmt: skip


def _config(inputs: list[str], out: Path, work: Path, model: str, **garble) -> BuildDatasetConfig:
    return BuildDatasetConfig(
        inputs=inputs,
        out=str(out),
        work_dir=str(work),
        base_model=model,
        shard_bytes=1 << 20,
        garble=GarbleSettings(max_new_tokens=16, batch_size=8, **garble),
        export=ExportSettings(eval_share=0.2),
    )


def _run(config: BuildDatasetConfig) -> dict:
    return _run_with_id(config)[0]


def _run_with_id(config: BuildDatasetConfig) -> tuple[dict, UUID]:
    flow = build_dataset.with_options(task_runner=ray_task_runner(None, None))
    state = flow(config, return_state=True)
    return state.result().report.to_dict(), state.state_details.flow_run_id


def _same_outputs(a: Path, b: Path) -> None:
    for name in OUTPUTS:
        assert (a / name).read_bytes() == (b / name).read_bytes(), name


@pytest.fixture(scope="module")
def corpus(tmp_path_factory) -> Path:
    root = tmp_path_factory.mktemp("flow-corpus")
    write_corpus(root, runs=100, seed=31)
    return root


class Reference(NamedTuple):
    """The module's first flow run: where it wrote, its report, and its Prefect flow run."""

    root: Path
    report: dict
    flow_run_id: UUID


@pytest.fixture(scope="module")
def reference(corpus, tiny_model, prefect_server, local_ray, tmp_path_factory) -> Reference:
    root = tmp_path_factory.mktemp("reference")
    config = _config([str(corpus / "runs")], root / "out", root / "work", tiny_model)
    return Reference(root, *_run_with_id(config))


def test_each_shard_is_its_own_run_and_the_report_an_artifact(reference):
    shard_runs, artifact_keys = asyncio.run(_task_runs_and_artifacts(reference.flow_run_id))
    total = reference.report["shards"]["total"]
    assert total > 1
    assert sorted(shard_runs) == [f"shard-{i:05d}" for i in range(total)]
    assert set(shard_runs.values()) == {"COMPLETED"}
    assert "build-dataset-report" in artifact_keys


async def _task_runs_and_artifacts(flow_run_id: UUID) -> tuple[dict[str, str], set[str]]:
    async with get_client() as client:
        runs = await client.read_task_runs(
            flow_run_filter=FlowRunFilter(id=FlowRunFilterId(any_=[flow_run_id]))
        )
        artifacts = await client.read_artifacts(
            artifact_filter=ArtifactFilter(flow_run_id=ArtifactFilterFlowRunId(any_=[flow_run_id]))
        )
    shard_runs = {r.name: r.state.type.value for r in runs if r.task_key.startswith("build_shard")}
    return shard_runs, {a.key for a in artifacts if a.key}


def test_report_matches_ground_truth(reference, corpus):
    root, report, _ = reference
    truth = json.loads((corpus / "ground_truth.json").read_text())["totals"]
    for key in ("files_in", "files_quarantined", "runs_in", "runs_quarantined"):
        assert report[key] == truth[key], key
    assert {k: v for k, v in report["runs_by_class"].items() if v} == truth["runs_by_class"]
    assert {k: v for k, v in report["pairs_by_rule"].items() if v} == truth["pairs_by_rule"]
    assert report["quarantine_reasons"] == truth["quarantine_reasons"]
    garbling, export = report["garbling"], report["export"]
    assert (
        garbling["requests"] == report["garble_requests"] == 2 * truth["runs_by_class"]["first_try"]
    )
    assert garbling["model"] + garbling["fallback"] == garbling["requests"]
    assert export["unfilled_pairs_dropped"] == 0
    written = export["dpo_train_rows"] + export["dpo_eval_rows"]
    assert written + export["duplicates_dropped"] == sum(truth["pairs_by_rule"].values())
    assert report["shards"]["total"] > 1
    assert json.loads((root / "out" / "report.json").read_text()) == report


def test_files_load_with_datasets(reference):
    root, report, _ = reference
    files = {
        "train": str(root / "out" / "dpo" / "train.jsonl"),
        "eval": str(root / "out" / "dpo" / "eval.jsonl"),
    }
    dpo = load_dataset("json", data_files=files)
    assert len(dpo["train"]) == report["export"]["dpo_train_rows"]
    garbled = dpo["train"].filter(lambda row: row["garbled"])
    assert len(garbled) > 0
    assert all(row["rejected"][0]["content"] != row["chosen"][0]["content"] for row in garbled)
    kto = load_dataset("json", data_files=str(root / "out" / "kto" / "train.jsonl"))["train"]
    assert len(kto) == report["export"]["kto_rows"]


def test_same_bytes_without_cache_and_with_another_pool_size(
    reference, corpus, tiny_model, tmp_path
):
    root, _, _ = reference
    report = _run(
        _config([str(corpus / "runs")], tmp_path / "out", tmp_path / "work", tiny_model, actors=1)
    )
    assert report["shards"]["cached"] == 0
    assert report["garbling"]["cached"] == 0
    _same_outputs(root / "out", tmp_path / "out")


def test_rerun_reuses_shards_and_garbles(reference, corpus, tiny_model, tmp_path):
    root, _first, _ = reference
    report = _run(_config([str(corpus / "runs")], tmp_path / "out", root / "work", tiny_model))
    assert report["shards"]["cached"] == report["shards"]["total"]
    assert report["garbling"]["cached"] == report["garbling"]["requests"]
    _same_outputs(root / "out", tmp_path / "out")


def test_a_generation_records_the_adapter_that_collected_its_runs(
    reference, corpus, tiny_model, tmp_path
):
    from agir_retrain.tasks.errors import ConfigError
    from agir_retrain.tasks.lineage import read_producer

    root, _first, _ = reference
    adapter = tmp_path / "adapter"
    (adapter / "eval").mkdir(parents=True)
    (adapter / "adapter_model.safetensors").write_bytes(b"weights")
    figure = {"value": 0.25, "ci_low": 0.1, "ci_high": 0.4}
    entry = {"tasks": 8, "pass_at_1": figure, "mean_freed_share": figure | {"value": 0.5}}
    (adapter / "eval" / "eval.json").write_text(
        json.dumps({"models": {"base": entry, "adapter": entry}})
    )
    config = _config([str(corpus / "runs")], tmp_path / "out", root / "work", tiny_model)
    _run(config.model_copy(update={"produced_by": str(adapter)}))
    _same_outputs(root / "out", tmp_path / "out")  # the data itself does not change
    producer = read_producer(tmp_path / "out")
    assert producer.adapter == str(adapter)
    assert producer.evaluation.model == "adapter"
    assert (producer.evaluation.pass_at_1, producer.evaluation.mean_freed_share) == (0.25, 0.5)
    assert read_producer(root / "out") is None  # nothing recorded unless asked

    missing = config.model_copy(update={"produced_by": str(tmp_path / "nope"), "out": "x"})
    with pytest.raises(ConfigError, match=r"no adapter_model\.safetensors"):
        _run(missing)  # before any shard is planned or built
    assert not Path("x").exists()


def test_grown_corpus_recomputes_only_new_shards(
    corpus, tiny_model, prefect_server, local_ray, tmp_path
):
    runs = tmp_path / "runs"
    shutil.copytree(corpus / "runs", runs)
    config = _config([str(runs)], tmp_path / "out", tmp_path / "work", tiny_model)
    first = _run(config)
    write_corpus(tmp_path / "more", runs=20, seed=32)
    for path in sorted((tmp_path / "more" / "runs").glob("full_agent_data_*.json")):
        shutil.copy(path, runs / path.name.replace("2025", "2027").replace("2024", "2027"))
    report = _run(config)
    assert report["runs_in"] > first["runs_in"]
    assert report["shards"]["cached"] >= first["shards"]["total"] - 1
    assert report["shards"]["total"] - report["shards"]["cached"] <= 3
    assert (
        report["garbling"]["cached"] >= first["garbling"]["requests"] - 8
    )  # the last shard's, at most


def test_killed_ray_worker_costs_a_retry_not_a_row(reference, corpus, tiny_model, tmp_path):
    root, _, _ = reference
    killed: list[int] = []

    def kill_one_shard_worker() -> None:
        deadline = time.monotonic() + 120
        while not killed and time.monotonic() < deadline:
            for process in psutil.process_iter(["cmdline"]):
                if any("build-shard" in part for part in process.info["cmdline"] or ()):
                    process.kill()
                    killed.append(process.pid)
                    return
            time.sleep(0.01)

    killer = threading.Thread(target=kill_one_shard_worker, daemon=True)
    killer.start()
    report = _run(_config([str(corpus / "runs")], tmp_path / "out", tmp_path / "work", tiny_model))
    killer.join(timeout=5)
    assert killed, "no shard worker was seen running"
    assert report["runs_in"] == reference.report["runs_in"]
    _same_outputs(root / "out", tmp_path / "out")


def test_malformed_corpus_completes_and_balances(
    data_file, tiny_model, prefect_server, local_ray, tmp_path
):
    bad = tmp_path / "bad"
    bad.mkdir()
    for name in (
        "truncated.json",
        "not_utf8.json",
        "empty.json",
        "top_level_array.json",
        "v5_attempt.json",
        "bad_runs.json",
    ):
        shutil.copy(data_file(name), bad / name)
    report = _run(_config([str(bad)], tmp_path / "out", tmp_path / "work", tiny_model))
    assert report["files_in"] == report["files_read"] + report["files_quarantined"] == 6
    assert report["runs_in"] == sum(report["runs_by_class"].values()) + report["runs_quarantined"]
    assert report["runs_quarantined"] == 6
    assert (tmp_path / "out" / "dpo" / "train.jsonl").exists()
