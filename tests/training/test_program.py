"""The training program (its DPO path) on the CPU with the tiny model: real TRL steps."""

from __future__ import annotations

import functools
import json
import math
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
import torch

from agir_retrain.tasks.errors import DatasetError
from agir_retrain.tasks.settings.models import LaunchSettings, TrainConfig
from agir_retrain.tasks.training.dpo import DpoSettings
from agir_retrain.tasks.training.model import (
    load_adapter,
    load_base,
    lora_targets,
    parameter_counts,
)

ROOT = Path(__file__).resolve().parents[2]


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


def _lora_parameter_count(config, targets: list[str], r: int) -> int:
    """LoRA adds A (r x in) and B (out x r) to each adapted layer: r * (in + out) each."""
    hidden, inner = config.hidden_size, config.intermediate_size
    head_dim = hidden // config.num_attention_heads
    kv = config.num_key_value_heads * head_dim
    shapes = {  # (in, out) of each projection of a Llama block
        "q_proj": (hidden, hidden), "k_proj": (hidden, kv), "v_proj": (hidden, kv),
        "o_proj": (hidden, hidden), "gate_proj": (hidden, inner), "up_proj": (hidden, inner),
        "down_proj": (inner, hidden),
    }  # fmt: skip
    return config.num_hidden_layers * sum(r * sum(shapes[name]) for name in targets)


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

    def test_4bit_is_nf4_with_double_quantization(self, tiny_model):
        model = load_base(tiny_model, quantize=True)
        settings = model.config.quantization_config
        assert (settings.load_in_4bit, settings.bnb_4bit_quant_type) == (True, "nf4")
        assert settings.bnb_4bit_use_double_quant is True
        layers = [m for m in model.modules() if type(m).__name__ == "Linear4bit"]
        assert len(layers) == 7 * model.config.num_hidden_layers  # every projection, not the head
        for layer in layers:
            state = layer.weight.quant_state
            assert state.quant_type == "nf4"
            assert state.nested  # double quantization: the scales are quantized too
        assert type(model.get_output_embeddings()).__name__ == "Linear"

    def test_4bit_counts_unpacked_parameters(self, tiny_model):
        quantized = parameter_counts(load_base(tiny_model, quantize=True))
        plain = parameter_counts(load_base(tiny_model, quantize=False))
        assert quantized.total == plain.total

    def test_trainable_parameters_are_exactly_the_lora_matrices(self, tiny_model):
        from peft import get_peft_model

        from agir_retrain.tasks.settings.models import LoraSettings
        from agir_retrain.tasks.training.model import load_policy, lora_config

        model, _ = load_policy(tiny_model, quantize=True, gradient_checkpointing=False)
        base_total = parameter_counts(model).total
        targets = lora_targets(model)
        policy = get_peft_model(model, lora_config(LoraSettings(r=8), targets))
        counts = parameter_counts(policy)
        expected = _lora_parameter_count(model.config, targets, r=8)
        assert expected == 2 * 8 * (
            64 + 64 + 64 + 32 + 64 + 32 + 64 + 64 + 64 + 128 + 64 + 128 + 128 + 64
        )
        assert counts.trainable == expected
        assert counts.total == base_total + expected


class TestCpu4bitPath:
    """bitsandbytes' CPU bf16 inference path (on CPUs with avx512_bf16) stays off.

    That path is taken only where the CPU has avx512_bf16 (the CI's AMD EPYC); elsewhere
    the capability is set as bitsandbytes would set it there, to walk the same code.
    """

    @pytest.fixture(params=["this-cpu", "as-on-avx512-bf16"])
    def cpu(self, request, monkeypatch):
        import bitsandbytes.functional
        import bitsandbytes.nn.modules

        if request.param == "this-cpu":
            if not bitsandbytes.functional.has_avx512bf16():
                pytest.skip("this CPU has no avx512_bf16: the simulated case covers the path")
        else:
            monkeypatch.setattr(bitsandbytes.nn.modules, "has_avx512bf16", lambda: True)
        return request.param

    def test_evaluation_computes_as_training_and_keeps_the_scales(self, tiny_model, cpu):
        model = load_base(tiny_model, quantize=True)
        layer = model.get_submodule("model.layers.0.self_attn.q_proj")
        absmax = layer.weight.quant_state.absmax.clone()
        ids = torch.tensor([[5, 6, 7, 8]])
        model.train()
        training = model(input_ids=ids).logits.detach()
        model.eval()
        with torch.no_grad():
            evaluated = model(input_ids=ids).logits
        # Same dequantize-then-fp32 path in both modes: bit-identical, not merely close.
        assert torch.equal(evaluated, training)
        assert not getattr(layer.weight.quant_state, "packing_format_for_cpu", False)
        assert torch.equal(layer.weight.quant_state.absmax, absmax)

    def test_odd_layer_widths_load_and_run(self, tmp_path, cpu):
        from transformers import AutoModelForCausalLM

        from agir_retrain.tasks.synth.tiny_model import make_tiny_model
        from agir_retrain.tasks.training.model import quantization_config

        # hidden 48, 4 heads of 12, 2 KV heads: k_proj and v_proj are 24 wide (not 32k)
        folder = make_tiny_model(
            tmp_path / "qwen", architecture="qwen2", hidden_size=48, layers=1, intermediate_size=96
        )
        ids = torch.tensor([[5, 6, 7]])
        raw = AutoModelForCausalLM.from_pretrained(
            folder, quantization_config=quantization_config(), device_map={"": "cpu"}
        ).eval()
        assert raw.get_submodule("model.layers.0.self_attn.k_proj").out_features == 24
        with pytest.raises(AssertionError, match="N must be divisible by block_n"), torch.no_grad():
            raw(input_ids=ids)  # bitsandbytes' own path, as the CI saw it
        model = load_base(str(folder), quantize=True).eval()
        with torch.no_grad():
            assert torch.isfinite(model(input_ids=ids).logits).all()


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

    def test_conversations_need_a_chat_template(self, dataset, tmp_path):
        from agir_retrain.tasks.errors import ChatTemplateError
        from agir_retrain.tasks.synth.tiny_model import make_tiny_model
        from agir_retrain.tasks.training.program import main

        model = make_tiny_model(tmp_path / "m", chat_template="none", hidden_size=32, layers=1)
        with pytest.raises(ChatTemplateError, match="has no chat template"):
            main(_config(dataset, str(model), tmp_path / "out"))
        assert not (tmp_path / "out").exists()  # stopped before any model was loaded


class _Counter:
    """Counts calls of a real function, which still runs (a spy, not a stand-in)."""

    def __init__(self, function):
        self.calls = 0

        @functools.wraps(function)
        def counted(*args, **kwargs):
            self.calls += 1
            return function(*args, **kwargs)

        self.function = counted  # a plain function: bound as a method where it replaces one


@pytest.fixture
def adapter_switches(monkeypatch):
    """Counts how often TRL disables the adapter to run the reference (the ``adapter`` mode)."""
    import trl.trainer.dpo_trainer as dpo_trainer

    counter = _Counter(dpo_trainer.use_adapter)
    monkeypatch.setattr(dpo_trainer, "use_adapter", counter.function)
    return counter


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
        scales_before = {
            n: m.weight.quant_state.absmax.clone()
            for n, m in model.named_modules()
            if type(m).__name__ == "Linear4bit"
        }
        # Before any step the policy is its reference: every reward is 0, the loss log(2).
        untrained = prepared.trainer.evaluate()
        assert untrained["eval_rewards/margins"] == 0.0
        assert untrained["eval_rewards/accuracies"] == 0.0
        assert untrained["eval_loss"] == pytest.approx(math.log(2), abs=1e-6)
        result = run(prepared)

        metrics = result.metrics
        assert [row["step"] for row in metrics.log_history if "loss" in row] == [1, 2, 3]
        changed = [
            n
            for n, p in model.named_parameters()
            if "lora_" in n and not torch.equal(p, lora_before[n])
        ]
        assert len(changed) == len(lora_before)  # every LoRA parameter moved
        for name, parameter in model.named_parameters():
            if "lora_" not in name:
                assert torch.equal(parameter, base_before[name]), name  # the 4-bit base did not
        for name, module in model.named_modules():
            if name in scales_before:  # evaluating and saving left the quantization scales alone
                assert torch.equal(module.weight.quant_state.absmax, scales_before[name]), name

        out = tmp_path / "out"
        for name in ("adapter_model.safetensors", "adapter_config.json", "tokenizer.json", "metrics.json",
                     "loss.png", "reward_accuracy.png", "reward_margin.png", "README.md", "train_config.yaml"):  # fmt: skip
            assert (out / name).is_file(), name
        evaluation = metrics.evaluation
        assert {split: values.rows for split, values in evaluation.items()} == {
            "overall": 6, "garbled": 3, "natural": 3,
        }  # fmt: skip
        for values in evaluation.values():  # the adapter moved the rewards off zero
            assert values.values["rewards/margins"] != 0.0
            assert values.loss is not None
            assert values.loss != pytest.approx(math.log(2))
        assert metrics.parameters.lora_targets == tuple(prepared.targets)
        assert metrics.parameters.trainable == _lora_parameter_count(
            model.get_base_model().config, prepared.targets, r=16
        )
        from agir_retrain.tasks.training.metrics import read_metrics

        assert read_metrics(out) == metrics  # metrics.json reads back as what was returned

        model.eval()
        trained = _logits(model, prepared.tokenizer)
        reloaded = load_adapter(tiny_model, out, quantize=True)
        # Exactly equal, on every CPU: reloading computes as training did, so no tolerance.
        # On the CI's avx512_bf16 CPUs these differed (-0.2284 against -0.2277, 0.3%: about
        # one bf16 step, 2^-8 = 0.39% relative, bf16 keeping ~3 significant digits) because
        # bitsandbytes' CPU bf16 kernel ran the evaluation in bf16 and its pack/unpack around
        # the save re-quantized the trained model's scales. That kernel is kept off (see
        # test_evaluation_computes_as_training_and_keeps_the_scales); the 4-bit base
        # dequantizes to fp32 in both models, and the LoRA matrices keep the bf16 TRL trained
        # them in (load_adapter). A tolerance of 2^-8 would pass that bug, and hide the next.
        assert torch.equal(_logits(reloaded, prepared.tokenizer), trained)

    def test_full_precision_lora_trains_and_merges(self, dataset, tiny_model, tmp_path):
        from peft import PeftModel
        from transformers import AutoModelForCausalLM, AutoTokenizer

        from agir_retrain.tasks.training.program import main

        result = main(_config(dataset, tiny_model, tmp_path / "out", quantize=False, merge=True))
        assert result.metrics.quantized is False
        out = tmp_path / "out"
        tokenizer = AutoTokenizer.from_pretrained(out)
        adapter = PeftModel.from_pretrained(load_base(tiny_model, quantize=False), str(out)).eval()
        merged = AutoModelForCausalLM.from_pretrained(out / "merged").eval()
        assert not any("lora" in n for n, _ in merged.named_parameters())
        assert torch.allclose(_logits(merged, tokenizer), _logits(adapter, tokenizer), atol=1e-4)

    def test_bfloat16_trains_in_bfloat16_on_the_cpu(self, dataset, tiny_model, tmp_path):
        """dtype=bfloat16: the base's weights and the trainer's autocast are bf16 (the CPU's
        2x), the loss is finite and the LoRA weights moved."""
        from agir_retrain.tasks.training.program import prepare, run

        prepared = prepare(
            _config(dataset, tiny_model, tmp_path / "out", quantize=False, dtype="bfloat16")
        )
        assert prepared.trainer.args.bf16 is True
        base_weights = [p for n, p in prepared.trainer.model.named_parameters() if "lora" not in n]
        assert {p.dtype for p in base_weights} == {torch.bfloat16}
        lora = {
            n: p.detach().clone()
            for n, p in prepared.trainer.model.named_parameters()
            if "lora_B" in n
        }
        result = run(prepared)
        assert math.isfinite(result.metrics.train.train_loss)
        after = dict(prepared.trainer.model.named_parameters())
        assert any(not torch.equal(after[n].detach(), before) for n, before in lora.items())

    def test_default_reference_is_the_base_with_the_adapter_disabled(
        self, dataset, tiny_model, tmp_path, adapter_switches
    ):
        from agir_retrain.tasks.training.program import prepare, run

        prepared = prepare(_config(dataset, tiny_model, tmp_path / "out", dpo={"max_steps": 2}))
        trainer = prepared.trainer
        assert trainer.ref_model is None  # no second model
        assert not trainer.precompute_ref_logps
        switches_before = adapter_switches.calls
        run(prepared)
        # One reference forward (adapter off) per training step, plus the evaluations'.
        assert adapter_switches.calls - switches_before >= 2

    def test_separate_reference_is_a_second_4bit_copy(
        self, dataset, tiny_model, tmp_path, adapter_switches
    ):
        from agir_retrain.tasks.training.program import prepare, run

        config = _config(
            dataset, tiny_model, tmp_path / "out", dpo={"max_steps": 2, "reference": "separate"}
        )
        prepared = prepare(config)
        trainer = prepared.trainer
        reference = trainer.ref_model
        assert reference is not None
        layers = [m for m in reference.modules() if type(m).__name__ == "Linear4bit"]
        assert len(layers) == 7 * reference.config.num_hidden_layers
        assert all(layer.weight.quant_state.quant_type == "nf4" for layer in layers)
        assert not any("lora_" in name for name, _ in reference.named_parameters())
        policy_storage = {p.data_ptr() for p in trainer.model.parameters()}
        assert not policy_storage & {p.data_ptr() for p in reference.parameters()}  # a copy
        run(prepared)
        assert adapter_switches.calls == 0  # the reference is that copy, never the policy

    def test_precomputed_reference_is_computed_once(
        self, dataset, tiny_model, tmp_path, adapter_switches, monkeypatch
    ):
        from trl import DPOTrainer

        from agir_retrain.tasks.training.program import prepare, run

        reference_batches = _Counter(DPOTrainer.compute_ref_log_probs)
        monkeypatch.setattr(DPOTrainer, "compute_ref_log_probs", reference_batches.function)
        config = _config(
            dataset, tiny_model, tmp_path / "out", dpo={"max_steps": 2, "reference": "precomputed"}
        )
        prepared = prepare(config)
        trainer = prepared.trainer
        assert trainer.ref_model is None
        assert {"ref_chosen_logps", "ref_rejected_logps"} <= set(trainer.train_dataset.column_names)
        # Once for every row before training: 8 train and 6 eval rows, 2 a batch.
        assert reference_batches.calls == 4 + 3
        run(prepared)
        # Training reads them from the batches. Only the provenance splits, new datasets
        # given to evaluate(), get theirs computed (once each: 3 rows, 2 a batch -> 2 + 2).
        assert reference_batches.calls == 4 + 3 + 2 + 2
        assert adapter_switches.calls == reference_batches.calls  # no other reference forward

    def test_sigmoid_with_an_sft_term(self, dataset, tiny_model, tmp_path):
        from agir_retrain.tasks.training.program import main

        config = _config(
            dataset,
            tiny_model,
            tmp_path / "out",
            dpo={"loss_types": ["sigmoid", "sft"], "loss_weights": [1.0, 0.2], "max_steps": 2},
        )
        assert main(config).metrics.train.global_step == 2

    def test_loss_weights_must_match_loss_types(self):
        with pytest.raises(ValueError, match="2 loss types"):
            DpoSettings(loss_types=["sigmoid", "sft"], loss_weights=[1.0])


@pytest.mark.slow
class TestChatTemplates:
    @pytest.mark.parametrize(
        ("architecture", "template", "merged", "folded"),
        [
            # 14 prompts, each system + 3 user turns + assistant + user: 2 merges each
            ("mistral", "mistral", 28, 0),
            ("qwen2", "gemma", 28, 14),
        ],
    )
    def test_agir_conversations_train_under_strict_templates(
        self, dataset, tmp_path, architecture, template, merged, folded
    ):
        from agir_retrain.tasks.synth.tiny_model import make_tiny_model
        from agir_retrain.tasks.training.program import main

        model = make_tiny_model(
            tmp_path / "m",
            architecture=architecture,
            chat_template=template,
            hidden_size=32,
            layers=1,
        )
        config = _config(
            dataset, str(model), tmp_path / "out", dpo={"max_steps": 1, "reference": "precomputed"}
        )
        metrics = main(config).metrics
        chat = metrics.data.chat
        assert (chat.conversations, chat.changed) == (14, 14)
        assert (chat.turns_merged, chat.systems_folded) == (merged, folded)
        assert chat.consecutive_turns is False
        assert chat.system_role is (template == "mistral")
        assert metrics.train.global_step == 1
        assert (tmp_path / "out" / "adapter_model.safetensors").is_file()
        card = (tmp_path / "out" / "README.md").read_text()
        assert "prompts conformed to the chat template" in card


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
        # Each rank computes with its share of the CPUs (accelerate alone would give it one).
        from agir_retrain.tasks.delivery.submit import cpu_threads_per_process

        assert single["train"]["cpu_threads"] == cpu_threads_per_process(one.launch)
        assert double["train"]["cpu_threads"] == cpu_threads_per_process(two.launch)

    def test_cpu_threads_are_the_setting_else_omp_else_a_share_of_the_cpus(self, monkeypatch):
        from agir_retrain.tasks.delivery.submit import accelerate_command, cpu_threads_per_process

        monkeypatch.delenv("OMP_NUM_THREADS", raising=False)
        monkeypatch.setattr("os.sched_getaffinity", lambda pid: set(range(8)))
        assert cpu_threads_per_process(LaunchSettings(num_processes=2)) == 4
        assert cpu_threads_per_process(LaunchSettings(num_processes=16)) == 1
        monkeypatch.setenv("OMP_NUM_THREADS", "3")
        assert cpu_threads_per_process(LaunchSettings()) == 3
        chosen = LaunchSettings(cpu_threads_per_process=5)
        assert cpu_threads_per_process(chosen) == 5
        command = accelerate_command("c.yaml", chosen)
        assert command[command.index("--num_cpu_threads_per_process") + 1] == "5"

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
        assert int(metrics.resumed_from_checkpoint.rsplit("-", 1)[-1]) >= 2
        assert metrics.train.global_step == 8
        assert (tmp_path / "out" / "checkpoint-8").is_dir()
