"""The QLoRA DPO training program on the CPU with the tiny model: real TRL steps."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
import torch

from agir_retrain.tasks.dataset.export import export_dataset
from agir_retrain.tasks.errors import DatasetError
from agir_retrain.tasks.settings.models import (
    DpoSettings,
    ExportSettings,
    LaunchSettings,
    TrainConfig,
)
from agir_retrain.tasks.synth.corpus import write_corpus
from agir_retrain.tasks.training.model import (
    load_adapter,
    load_base,
    lora_targets,
    parameter_counts,
)

ROOT = Path(__file__).resolve().parents[2]


@pytest.fixture(scope="module")
def dataset(tmp_path_factory, ingest_with_stand_ins) -> Path:
    """A small DPO dataset built from a synthetic corpus (rejected sides filled by stand-ins)."""
    root = tmp_path_factory.mktemp("train-data")
    write_corpus(root / "corpus", runs=40, seed=3)
    ingest_with_stand_ins(root / "d", [str(root / "corpus" / "runs")])
    export_dataset(str(root / "d"), str(root / "d"), ExportSettings(eval_share=0.5))
    evaluation = [
        json.loads(line) for line in (root / "d" / "dpo" / "eval.jsonl").read_text().splitlines()
    ]
    assert {row["garbled"] for row in evaluation} == {True, False}  # both provenances to split by
    return root / "d"


def _config(dataset: Path, model: str, out: Path, **overrides) -> TrainConfig:
    dpo = {
        "max_steps": 3, "batch_size": 2, "gradient_accumulation": 1, "max_length": 512,
        # a high rate so three steps visibly move the tiny model's adapter
        "learning_rate": 5e-3, "save_steps": 100,
    } | overrides.pop("dpo", {})  # fmt: skip
    return TrainConfig(
        dataset=str(dataset), base_model=model, out=str(out), dpo=DpoSettings(**dpo), **overrides
    )


def _logits(model, tokenizer) -> torch.Tensor:
    ids = tokenizer("print('free space')", return_tensors="pt")["input_ids"]
    with torch.no_grad():
        return model(input_ids=ids).logits.float()


class TestModelSetup:
    def test_lora_targets_are_every_linear_layer_but_the_head(self, tiny_model):
        for quantize in (True, False):
            model = load_base(tiny_model, quantize=quantize)
            assert lora_targets(model) == [
                "down_proj",
                "gate_proj",
                "k_proj",
                "o_proj",
                "q_proj",
                "up_proj",
                "v_proj",
            ]

    def test_4bit_counts_unpacked_parameters(self, tiny_model):
        quantized = parameter_counts(load_base(tiny_model, quantize=True))
        plain = parameter_counts(load_base(tiny_model, quantize=False))
        assert quantized.total == plain.total


class TestBadDataset:
    @pytest.mark.parametrize(
        ("rows", "message"),
        [
            ([], "no rows"),
            ([{"prompt": "p", "chosen": "c"}], "missing column"),
            ([{"prompt": "p", "chosen": 1, "rejected": 2}], "must be a string or a list"),
        ],
    )
    def test_stops_with_a_clear_message_before_any_model_is_loaded(self, tmp_path, rows, message):
        from agir_retrain.tasks.training.program import main

        (tmp_path / "train.jsonl").write_text("".join(json.dumps(r) + "\n" for r in rows))
        # The base model does not exist: loading it first would fail with another error.
        config = TrainConfig(
            dataset=str(tmp_path),
            base_model=str(tmp_path / "no-such-model"),
            out=str(tmp_path / "o"),
        )
        with pytest.raises(DatasetError, match=message):
            main(config)


@pytest.mark.slow
class TestTrain:
    def test_4bit_lora_trains_saves_and_reloads(self, dataset, tiny_model, tmp_path):
        from agir_retrain.tasks.training.program import prepare, run

        prepared = prepare(_config(dataset, tiny_model, tmp_path / "out"))
        model = prepared.trainer.model
        lora_before = {n: p.detach().clone() for n, p in model.named_parameters() if "lora_" in n}
        base_before = {
            n: p.detach().clone() for n, p in model.named_parameters() if "lora_" not in n
        }
        assert any(type(m).__name__ == "Linear4bit" for m in model.modules())
        result = run(prepared)

        history = result.metrics["log_history"]
        assert any("loss" in row for row in history)
        changed = [
            n
            for n, p in model.named_parameters()
            if "lora_" in n and not torch.equal(p, lora_before[n])
        ]
        assert len(changed) == len(lora_before)  # every LoRA parameter moved
        for name, parameter in model.named_parameters():
            if "lora_" not in name:
                assert torch.equal(parameter, base_before[name]), name  # the 4-bit base did not

        out = tmp_path / "out"
        for name in ("adapter_model.safetensors", "adapter_config.json", "tokenizer.json", "metrics.json",
                     "loss.png", "reward_accuracy.png", "reward_margin.png", "README.md", "train_config.yaml"):  # fmt: skip
            assert (out / name).is_file(), name
        evaluation = result.metrics["evaluation"]
        assert set(evaluation) == {"overall", "garbled", "natural"}
        assert (
            evaluation["garbled"]["rows"] + evaluation["natural"]["rows"]
            == evaluation["overall"]["rows"]
        )
        assert 0.0 <= evaluation["garbled"]["rewards/accuracies"] <= 1.0
        assert result.metrics["parameters"]["lora_targets"] == prepared.targets

        model.eval()
        trained = _logits(model, prepared.tokenizer)
        reloaded = load_adapter(tiny_model, out, quantize=True)
        assert torch.equal(_logits(reloaded, prepared.tokenizer), trained)

    def test_full_precision_lora_trains_and_merges(self, dataset, tiny_model, tmp_path):
        from peft import PeftModel
        from transformers import AutoModelForCausalLM, AutoTokenizer

        from agir_retrain.tasks.training.program import main

        result = main(_config(dataset, tiny_model, tmp_path / "out", quantize=False, merge=True))
        assert result.metrics["quantized"] is False
        out = tmp_path / "out"
        tokenizer = AutoTokenizer.from_pretrained(out)
        adapter = PeftModel.from_pretrained(load_base(tiny_model, quantize=False), str(out)).eval()
        merged = AutoModelForCausalLM.from_pretrained(out / "merged").eval()
        assert not any("lora" in n for n, _ in merged.named_parameters())
        assert torch.allclose(_logits(merged, tokenizer), _logits(adapter, tokenizer), atol=1e-4)

    @pytest.mark.parametrize("reference", ["separate", "precomputed"])
    def test_reference_modes(self, dataset, tiny_model, tmp_path, reference):
        from agir_retrain.tasks.training.program import prepare, run

        prepared = prepare(_config(dataset, tiny_model, tmp_path / "out", reference=reference))
        trainer = prepared.trainer
        if reference == "separate":
            assert trainer.ref_model is not None
            assert any(type(m).__name__ == "Linear4bit" for m in trainer.ref_model.modules())
        else:
            assert trainer.ref_model is None
            assert trainer.args.precompute_ref_log_probs
        result = run(prepared)
        assert result.metrics["reference"] == reference
        assert any("loss" in row for row in result.metrics["log_history"])

    def test_sigmoid_with_an_sft_term(self, dataset, tiny_model, tmp_path):
        from agir_retrain.tasks.training.program import main

        config = _config(
            dataset,
            tiny_model,
            tmp_path / "out",
            dpo={"loss_types": ["sigmoid", "sft"], "loss_weights": [1.0, 0.2]},
        )
        assert main(config).metrics["train"]["global_step"] == 3

    def test_loss_weights_must_match_loss_types(self):
        with pytest.raises(ValueError, match="2 loss types"):
            DpoSettings(loss_types=["sigmoid", "sft"], loss_weights=[1.0])


def test_resume_skips_a_half_written_checkpoint(tmp_path):
    from agir_retrain.tasks.training.program import last_complete_checkpoint

    assert last_complete_checkpoint(str(tmp_path / "missing")) is None
    for step, complete in ((2, True), (10, True), (12, False)):
        folder = tmp_path / f"checkpoint-{step}"
        folder.mkdir()
        if complete:
            (folder / "trainer_state.json").write_text("{}")
    assert last_complete_checkpoint(str(tmp_path)) == str(tmp_path / "checkpoint-10")


@pytest.mark.slow
@pytest.mark.integration
class TestLaunch:
    def test_ddp_with_two_processes(self, dataset, tiny_model, tmp_path):
        from agir_retrain.tasks.delivery.submit import submit_local

        one = _config(dataset, tiny_model, tmp_path / "one", dpo={"max_steps": 2})
        two = one.model_copy(
            update={"out": str(tmp_path / "two"), "launch": LaunchSettings(num_processes=2)}
        )
        submit_local(one)
        submit_local(two)
        single = json.loads((tmp_path / "one" / "metrics.json").read_text())
        double = json.loads((tmp_path / "two" / "metrics.json").read_text())
        assert (single["world_size"], double["world_size"]) == (1, 2)
        # The same steps see twice the rows when two ranks share the batches.
        assert double["train"]["epoch"] == pytest.approx(2 * single["train"]["epoch"])
        assert (tmp_path / "two" / "adapter_model.safetensors").is_file()

    def test_failed_job_raises_with_its_own_error(self, tmp_path):
        from agir_retrain.tasks.delivery.submit import submit_local
        from agir_retrain.tasks.errors import SubmitError

        (tmp_path / "train.jsonl").write_text('{"prompt": "p"}\n')
        config = TrainConfig(
            dataset=str(tmp_path), base_model="builtin:tiny", out=str(tmp_path / "o")
        )
        with pytest.raises(SubmitError) as failure:
            submit_local(config)
        assert failure.value.returncode != 0
        assert "missing column" in failure.value.log_tail

    def test_resume_after_a_killed_run(self, dataset, tiny_model, tmp_path):
        config = _config(
            dataset,
            tiny_model,
            tmp_path / "out",
            dpo={"max_steps": 40, "save_steps": 2, "learning_rate": 1e-4},
        )
        config_file = tmp_path / "train.yaml"
        from agir_retrain.tasks.training.outputs import write_config

        write_config(config, config_file)
        command = [
            sys.executable,
            "-m",
            "agir_retrain.tasks.training",
            "--config",
            str(config_file),
        ]
        process = subprocess.Popen(
            command, cwd=ROOT, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL
        )
        deadline = time.monotonic() + 300
        while not (tmp_path / "out" / "checkpoint-4").is_dir() and time.monotonic() < deadline:
            assert process.poll() is None, "training ended before it could be interrupted"
            time.sleep(0.1)
        os.kill(process.pid, signal.SIGKILL)
        process.wait(timeout=30)
        assert not (tmp_path / "out" / "metrics.json").exists()

        resumed = config.model_copy(
            update={"resume": True, "dpo": config.dpo.model_copy(update={"max_steps": 8})}
        )
        from agir_retrain.tasks.training.program import main

        metrics = main(resumed).metrics
        # Killed at any moment: resumed from checkpoint 4, or 2 if 4 was still being written.
        assert int(metrics["resumed_from_checkpoint"].rsplit("-", 1)[-1]) >= 2
        assert metrics["train"]["global_step"] == 8
        assert (tmp_path / "out" / "checkpoint-8").is_dir()
