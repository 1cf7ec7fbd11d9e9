"""The compare flow end to end on the embedded default: a built dataset, the tiny model, 4 objectives."""

from __future__ import annotations

import json
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
    tmp_path, dataset, tiny_model, prefect_server, local_ray
):
    from agir_retrain.flows.compare import compare

    short = {"batch_size": 2, "gradient_accumulation": 1, "max_length": 384, "save_steps": 100}
    config = CompareConfig(
        dataset=str(dataset),
        base_model=tiny_model,
        out=str(tmp_path / "compare"),
        max_steps=1,
        train={
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
    assert [r.model for r in result.rows] == ["base", "dpo", "sft", "kto", "grpo"]
    for row in result.rows[1:]:
        assert row.train_steps == 1
        assert (out / row.model / "adapter_model.safetensors").is_file()
    rows = json.loads((out / "compare.json").read_text())
    assert [r["model"] for r in rows] == ["base", "dpo", "sft", "kto", "grpo"]
    # A random tiny model writes no program that runs: every model scores zero, as the table says.
    assert all(r["pass_at_1"]["value"] == 0.0 for r in rows)
    assert "| grpo |" in (out / "compare.md").read_text()
    assert (out / "compare.png").read_bytes().startswith(b"\x89PNG")
    assert (out / "eval" / "eval.json").is_file()
