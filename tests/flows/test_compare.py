"""The compare flow end to end on the embedded default: a built dataset, the tiny model, the
four built-in objectives and one defined outside the package (tests/plugins/toy_objective.py)."""

from __future__ import annotations

import json
import tarfile
from pathlib import Path

import pytest

from agir_retrain.tasks.dataset.export import export_dataset
from agir_retrain.tasks.settings.compare import CompareConfig
from agir_retrain.tasks.settings.models import ExportSettings
from agir_retrain.tasks.synth.corpus import write_corpus


@pytest.fixture(scope="module")
def dataset(tmp_path_factory, ingest_with_stand_ins) -> Path:
    root = tmp_path_factory.mktemp("compare-dataset")
    write_corpus(root / "corpus", runs=40, seed=2, env_kib=2)
    folder = ingest_with_stand_ins(root / "dataset", [str(root / "corpus" / "runs")])
    export_dataset(str(folder), str(folder), ExportSettings(eval_share=0.5))
    return folder


@pytest.mark.slow
@pytest.mark.integration
def test_compare_trains_each_objective_and_writes_one_table(
    tmp_path, dataset, tiny_model, prefect_server, local_ray, toy_objective
):
    """Also the toy objective, named only in the settings: trained through the local backend
    (the job registers it from ``objective_plugins`` too), evaluated with the others in the
    sandbox, then archived with the hash of the split it read. No module of the package names it.
    """
    from agir_retrain.flows.compare import compare
    from agir_retrain.tasks.delivery.archive import create_archive, dataset_hash, verify_archive
    from agir_retrain.tasks.training.metrics import read_metrics

    short = {"batch_size": 2, "gradient_accumulation": 1, "max_length": 384, "save_steps": 100}
    config = CompareConfig(
        dataset=str(dataset),
        base_model=tiny_model,
        out=str(tmp_path / "compare"),
        max_steps=1,
        objectives=["dpo", "sft", "kto", "grpo", "toy"],
        train={
            "objective_plugins": [toy_objective.PLUGIN],
            "toy": short | {"prompt_loss": True},
            "dpo": short,
            "sft": short,
            "kto": short,
            "grpo": {
                "num_generations": 2, "max_prompt_length": 256, "max_completion_length": 16,
                "workers": 1, "save_steps": 100, "environment": {"limits": {"wall_s": 5}},
            },
        },
        evaluate={
            "samples": 1, "max_new_tokens": 16, "max_tasks": 2,
            "scenarios": ["few-large"], "sampling": {"batch_size": 4, "actors": 1, "max_prompt_tokens": 256},
            "environment": {"limits": {"wall_s": 5}},
        },
    )  # fmt: skip
    result = compare(config)
    out = tmp_path / "compare"
    assert [r.model for r in result.rows] == ["base", "dpo", "sft", "kto", "grpo", "toy"]
    for row in result.rows[1:]:
        assert row.train_steps == 1
        assert (out / row.model / "adapter_model.safetensors").is_file()
    rows = json.loads((out / "compare.json").read_text())
    assert [r["model"] for r in rows] == ["base", "dpo", "sft", "kto", "grpo", "toy"]
    # A random tiny model writes no program that runs: every model scores zero, as the table says.
    assert all(r["pass_at_1"]["value"] == 0.0 for r in rows)
    assert "| grpo |" in (out / "compare.md").read_text()
    assert (out / "compare.png").read_bytes().startswith(b"\x89PNG")
    assert (out / "eval" / "eval.json").is_file()

    toy = out / "toy"  # the objective of our own: trained, evaluated, archived
    metrics = read_metrics(toy)
    assert (metrics.objective, metrics.train.global_step) == ("toy", 1)
    assert metrics.data.train_file == str(dataset / "sft" / "train.jsonl")
    assert (toy / "toy_loss.png").read_bytes().startswith(b"\x89PNG")
    assert "| toy |" in (out / "compare.md").read_text()
    evaluated = json.loads((out / "eval" / "eval.json").read_text())["models"]["toy"]
    assert evaluated["tasks"] == 2
    location = create_archive(toy, str(tmp_path / "archives"), dataset=dataset)
    assert verify_archive(location).ok
    with tarfile.open(location) as archive:
        manifest = json.load(archive.extractfile("MANIFEST.json"))
    assert manifest["dataset_sha256"] == dataset_hash(dataset, "toy")
    assert dataset_hash(dataset, "toy") == dataset_hash(dataset, "sft")  # the split it read
