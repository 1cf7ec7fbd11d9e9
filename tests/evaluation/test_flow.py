"""The evaluate flow with sampled completions: a built dataset, the tiny model and an adapter."""

from __future__ import annotations

from pathlib import Path

import orjson
import polars as pl
import pytest

from agir_retrain.tasks.dataset.export import export_dataset
from agir_retrain.tasks.evaluation.completions import read_completions
from agir_retrain.tasks.evaluation.eval_tasks import read_tasks
from agir_retrain.tasks.evaluation.sampling import (
    SamplerSpec,
    plan_sample_batches,
    sample_locally,
    sample_requests,
)
from agir_retrain.tasks.settings.evaluation import EvaluateConfig
from agir_retrain.tasks.settings.models import ExportSettings
from agir_retrain.tasks.synth.corpus import write_corpus


@pytest.fixture(scope="module")
def adapter(tiny_model: str, tmp_path_factory) -> str:
    from peft import LoraConfig, get_peft_model
    from transformers import AutoModelForCausalLM

    folder = tmp_path_factory.mktemp("flow-adapter")
    model = get_peft_model(
        AutoModelForCausalLM.from_pretrained(tiny_model),
        LoraConfig(r=4, target_modules=["q_proj", "v_proj"], init_lora_weights=False),
    )
    model.save_pretrained(folder)
    return str(folder)


@pytest.fixture(scope="module")
def dataset(tmp_path_factory, ingest_with_stand_ins) -> Path:
    root = tmp_path_factory.mktemp("flow-dataset")
    write_corpus(root / "corpus", runs=40, seed=2, env_kib=2)
    folder = ingest_with_stand_ins(root / "dataset", [str(root / "corpus" / "runs")])
    export_dataset(str(folder), str(folder), ExportSettings(eval_share=0.5))
    return folder


@pytest.mark.slow
@pytest.mark.integration
def test_sampled_evaluation_writes_the_contract_files(
    tmp_path: Path, dataset: Path, tiny_model, adapter, prefect_server, local_ray
) -> None:
    from agir_retrain.flows.evaluate import evaluate

    config = EvaluateConfig(
        dataset=str(dataset),
        base_model=tiny_model,
        adapters=[f"tuned={adapter}"],
        samples=2,
        max_new_tokens=24,
        temperature=1.0,
        max_tasks=3,
        scenarios=["few-large", "many-small"],
        env_blocks="scenario",
        out=str(tmp_path / "eval"),
        sampling={"batch_size": 4, "actors": 2, "max_prompt_tokens": 512},
        environment={"limits": {"wall_s": 5}},
    )
    result = evaluate(config)
    out = tmp_path / "eval"

    tasks = read_tasks(str(out / "tasks.jsonl"))
    assert len(tasks) == 3
    assert [t.scenario for t in tasks] == ["few-large", "many-small", "few-large"]
    assert {t.env_blocks for t in tasks} == {"scenario"}
    completions = read_completions(str(out / "completions.jsonl"), {t.task_id for t in tasks})
    assert len(completions) == 3 * 2 * 2
    # The flow's completions are the seeded ones: the same drawn here, in one process.
    spec = SamplerSpec.from_config(config, tiny_model)
    here = sample_locally(
        spec, plan_sample_batches(sample_requests(tasks, ["base", "tuned"], 2), 7)
    )
    assert sorted(here, key=lambda c: (c.model, c.task_id, c.sample)) == completions

    episodes = pl.read_parquet(out / "episodes.parquet")
    assert episodes.height == 12
    assert set(episodes["scenario"]) == {"few-large", "many-small"}
    report = orjson.loads((out / "eval.json").read_bytes())
    assert [m.model for m in result.report.models] == ["base", "tuned"]
    assert set(report["models"]) == {"base", "tuned"}
    assert report["models"]["tuned"]["samples"] == 6
    assert report["k"] == 2
    # A tiny random model writes random bytes: it scores zero, and the report says so.
    for label in ("base", "tuned"):
        assert report["models"][label]["pass_at_1"]["value"] == 0.0
    (difference,) = report["differences"]
    assert (difference["model"], difference["baseline"]) == ("tuned", "base")


@pytest.mark.slow
@pytest.mark.integration
def test_retrain_evaluates_the_new_adapter_and_archives_eval_json(
    tmp_path: Path, dataset: Path, tiny_model, adapter, prefect_server, local_ray
) -> None:
    import shutil
    import tarfile

    from agir_retrain.flows.retrain import evaluate_adapter
    from agir_retrain.tasks.delivery.archive import create_archive
    from agir_retrain.tasks.settings.models import RetrainConfig

    trained = tmp_path / "retrain" / "adapter"
    shutil.copytree(adapter, trained)  # stands in for the adapter the train stage wrote
    config = RetrainConfig(
        out=str(tmp_path / "retrain"),
        base_model=tiny_model,
        build={"out": str(dataset)},
        evaluate=True,
        evaluation={"max_tasks": 2, "max_new_tokens": 8, "sampling": {"actors": 1}},
    )
    assert config.evaluation.dataset == str(dataset)
    assert config.evaluation.out == f"{trained}/eval"
    result = evaluate_adapter(config)
    assert [m.model for m in result.report.models] == ["base", "adapter"]
    report = orjson.loads((trained / "eval" / "eval.json").read_bytes())
    assert report["models"]["adapter"]["tasks"] == 2
    location = create_archive(trained, str(tmp_path / "archives"))
    with tarfile.open(location) as archive:
        names = archive.getnames()
    assert "eval/eval.json" in names
    assert "eval/episodes.parquet" in names
