"""SFT, KTO and GRPO: their settings mappings, their rows, the execution reward, real TRL steps."""

from __future__ import annotations

import json
import random
from pathlib import Path

import pytest
import torch

from agir_retrain.tasks.environment.contract import FileKind, Scenario, ScenarioFile
from agir_retrain.tasks.errors import DatasetError
from agir_retrain.tasks.settings.environment import EnvironmentSettings
from agir_retrain.tasks.settings.models import TrainConfig
from agir_retrain.tasks.synth import text
from agir_retrain.tasks.training import grpo, kto, sft
from agir_retrain.tasks.training.completions import (
    as_pairs,
    code_prompts,
    from_pairs,
    load_completion_rows,
    mix_rehearsal,
    rehearsal_rows,
)

SHARED = {"on_gpu": False, "bf16": False, "gradient_checkpointing": False}


def write_rows(path: Path, rows: list[dict]) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text("".join(json.dumps(row) + "\n" for row in rows))
    return path


def _rows(n: int, seed: int = 3) -> list[dict]:
    """Short agent-shaped rows: a code request, a program (chosen) and a garbled one (rejected)."""
    rng = random.Random(seed)
    rows = []
    for _ in range(n):
        strategy = text.strategy(rng)
        rows.append(
            {
                "prompt": [
                    {"role": "system", "content": "You are an agent freeing space in `/`."},
                    {"role": "user", "content": text.listing(rng, 120)},
                    {
                        "role": "user",
                        "content": text.CODE_REQUEST.format(strat=strategy).split("\n")[0],
                    },
                ],
                "chosen": [{"role": "assistant", "content": text.fenced(text.code(rng))}],
                "rejected": [{"role": "assistant", "content": f"garbled {rng.random()}"}],
            }
        )
    return rows


@pytest.fixture(scope="module")
def objective_dataset(tmp_path_factory) -> Path:
    """A dataset folder as the dataset flow writes it for SFT and KTO."""
    root = tmp_path_factory.mktemp("objective-data")
    rows = _rows(8)
    sft_rows = [
        {"prompt": r["prompt"], "completion": r["chosen"], "prompt_kind": "code", "run_id": f"r{i}"}
        for i, r in enumerate(rows)
    ]
    write_rows(root / "sft" / "train.jsonl", sft_rows)
    write_rows(root / "sft" / "eval.jsonl", sft_rows[:4])
    kto_rows = [
        {
            "prompt": r["prompt"],
            "completion": r["chosen"] if i % 3 else r["rejected"],
            "label": bool(i % 3),
        }
        for i, r in enumerate(rows)
    ]
    write_rows(root / "kto" / "train.jsonl", kto_rows)
    write_rows(root / "kto" / "eval.jsonl", kto_rows)  # the fixed batch the loss must fall on
    return root


def _labelled(desirable: int, undesirable: int) -> list[dict]:
    """Rows with these label counts (all the KTO mapping reads of them)."""
    return [{"label": True}] * desirable + [{"label": False}] * undesirable


class TestMappings:
    def test_sft_puts_the_loss_on_the_completion(self):
        config = TrainConfig(objective="sft", sft={"max_length": 700, "learning_rate": 2e-4})
        mapped = sft.OBJECTIVE.trl_config(config, has_eval=True, **SHARED)
        assert mapped["completion_only_loss"] is True
        assert mapped["packing"] is False
        assert mapped["max_length"] == 700
        assert mapped["learning_rate"] == 2e-4
        assert mapped["report_to"] == "none"

    @pytest.mark.parametrize(
        ("desirable", "undesirable"), [(10, 90), (90, 10), (7, 3), (1, 1), (3, 200)]
    )
    def test_kto_weights_fall_in_trls_advised_band(self, desirable, undesirable):
        config = TrainConfig(objective="kto")
        mapped = kto.OBJECTIVE.trl_config(
            config, train_rows=_labelled(desirable, undesirable), has_eval=False, **SHARED
        )
        d, u = mapped["desirable_weight"], mapped["undesirable_weight"]
        # TRL 1.16's own check (kto_trainer.py): rounded bounds, desirable side adjusted.
        low = round(undesirable * u / desirable, 2)
        high = round(undesirable * u / desirable * 1.33, 2)
        assert low <= d <= high
        assert 1.0 <= d * desirable / (u * undesirable) <= 4 / 3

    def test_kto_given_weights_are_kept(self):
        config = TrainConfig(
            objective="kto", kto={"desirable_weight": 2.0, "undesirable_weight": 0.5}
        )
        mapped = kto.OBJECTIVE.trl_config(
            config, train_rows=_labelled(1, 9), has_eval=False, **SHARED
        )
        assert (mapped["desirable_weight"], mapped["undesirable_weight"]) == (2.0, 0.5)

    def test_kto_needs_two_rows_a_batch(self):
        with pytest.raises(ValueError, match="greater than or equal to 2"):
            TrainConfig(objective="kto", kto={"batch_size": 1})

    def test_grpo_batches_hold_whole_groups(self):
        config = TrainConfig(
            objective="grpo",
            grpo={
                "batch_size": 2, "gradient_accumulation": 3, "num_generations": 4,
                "temperature": 0.7, "beta": 0.02, "max_completion_length": 64,
            },
        )  # fmt: skip
        mapped = grpo.OBJECTIVE.trl_config(config, **SHARED)
        assert mapped["per_device_train_batch_size"] == 8  # 2 prompts x 4 generations
        assert mapped["gradient_accumulation_steps"] == 3
        assert mapped["num_generations"] == 4
        assert mapped["temperature"] == 0.7
        assert mapped["beta"] == 0.02
        assert mapped["max_completion_length"] == 64
        assert mapped["remove_unused_columns"] is False
        assert mapped["eval_strategy"] == "no"

    def test_grpo_needs_two_generations(self):
        with pytest.raises(ValueError, match="greater than or equal to 2"):
            TrainConfig(objective="grpo", grpo={"num_generations": 1})


class TestRows:
    def test_completion_rows_are_checked_with_the_row_named(self, tmp_path):
        path = write_rows(
            tmp_path / "x.jsonl", [{"prompt": "p", "completion": "c"}, {"prompt": "p"}]
        )
        with pytest.raises(DatasetError, match=r"x\.jsonl:2: missing column\(s\) \['completion'\]"):
            load_completion_rows(str(path))
        path = write_rows(
            tmp_path / "y.jsonl", [{"prompt": "p", "completion": "c", "label": "yes"}]
        )
        with pytest.raises(DatasetError, match="label must be true or false"):
            load_completion_rows(str(path), labelled=True)
        path = write_rows(tmp_path / "z.jsonl", [{"prompt": "p", "completion": [{"role": "a"}]}])
        with pytest.raises(DatasetError, match="both be strings or both lists"):
            load_completion_rows(str(path))

    def test_kto_needs_both_labels(self, tmp_path):
        write_rows(
            tmp_path / "kto" / "train.jsonl", [{"prompt": "p", "completion": "c", "label": True}]
        )
        with pytest.raises(DatasetError, match="KTO needs desirable and undesirable"):
            kto.OBJECTIVE.load_data(TrainConfig(objective="kto", dataset=str(tmp_path)))

    def test_missing_objective_folder_is_named(self, tmp_path):
        with pytest.raises(DatasetError, match=r"sft/train\.jsonl"):
            sft.OBJECTIVE.load_data(TrainConfig(objective="sft", dataset=str(tmp_path)))

    def test_rehearsal_is_mixed_at_its_share_deterministically(self, tmp_path):
        chat = [
            {
                "messages": [
                    {"role": "user", "content": f"q{i}"},
                    {"role": "assistant", "content": f"a{i}"},
                ]
            }
            for i in range(30)
        ]
        general = rehearsal_rows(str(write_rows(tmp_path / "chat.jsonl", chat)))
        assert general[0]["completion"] == [{"role": "assistant", "content": "a0"}]
        rows = [{"prompt": f"p{i}", "completion": f"c{i}"} for i in range(50)]
        mixed = mix_rehearsal(rows, general, 0.1, seed=5)
        assert len(mixed) == 55
        assert [r for r in mixed if r.get("source") != "rehearsal"] == rows  # order kept
        assert mixed == mix_rehearsal(rows, general, 0.1, seed=5)
        assert mixed != mix_rehearsal(rows, general, 0.1, seed=6)
        assert len(mix_rehearsal(rows, general, 2.0, seed=5)) == 80  # capped by the file

    def test_rehearsal_file_reaches_the_training_rows(self, objective_dataset, tmp_path):
        chat = [
            {
                "messages": [
                    {"role": "user", "content": "hi"},
                    {"role": "assistant", "content": "hello"},
                ]
            }
        ]
        path = write_rows(tmp_path / "chat.jsonl", chat * 4)
        config = TrainConfig(
            objective="sft",
            dataset=str(objective_dataset),
            sft={"rehearsal_file": str(path), "rehearsal_share": 0.25},
        )
        data = sft.OBJECTIVE.load_data(config)
        assert len(data.train) == 10
        assert len(data.eval) == 4
        assert sum(r.get("source") == "rehearsal" for r in data.train) == 2

    def test_pair_view_round_trips(self):
        rows = [
            {
                "prompt": [{"role": "user", "content": "u"}],
                "completion": [{"role": "assistant", "content": "c"}],
                "x": 1,
            },
            {"prompt": [{"role": "user", "content": "u"}], "task_id": "t", "scenario": "s"},
        ]
        pairs = as_pairs(rows)
        assert pairs[0]["chosen"] == pairs[0]["rejected"] == rows[0]["completion"]
        assert from_pairs(pairs) == rows

    def test_grpo_prompts_are_the_distinct_code_prompts_bound_to_scenarios(self, objective_dataset):
        config = TrainConfig(
            objective="grpo",
            dataset=str(objective_dataset),
            grpo={"scenarios": ["few-large", "many-small"]},
        )
        data = grpo.OBJECTIVE.load_data(config)
        rows = data.train
        assert data.eval == []
        assert data.files.train.endswith("sft/train.jsonl")
        assert [r["task_id"] for r in rows] == [f"r{i}/code" for i in range(8)]
        assert [r["scenario"] for r in rows] == ["few-large", "many-small"] * 4
        assert code_prompts([{"prompt": "s", "completion": "c"}]) == []  # string prompts: none


FREE_JUNK = """```python
import os
os.remove("/var/cache/apt/archives/foo.deb")
```"""
CRASH = "```python\nraise SystemExit(3)\n```"
HARMLESS = "```python\nprint('nothing to do')\n```"
DAMAGE = "```python\nimport os\nos.remove('/etc/app/app.conf')\n```"


@pytest.fixture(scope="module")
def sandbox_settings() -> EnvironmentSettings:
    from agir_retrain.tasks.environment.sandbox import SandboxError
    from agir_retrain.tasks.environment.sandbox_bwrap import BwrapSandbox

    try:
        BwrapSandbox()
    except SandboxError as exc:
        pytest.skip(f"bubblewrap cannot run here: {exc}")
    return EnvironmentSettings(
        backend="bwrap", limits={"wall_s": 5, "memory_mb": 256, "processes": 32, "file_size_mb": 4}
    )


def _scenario() -> Scenario:
    junk, protected = FileKind.JUNK, FileKind.PROTECTED
    return Scenario(
        name="small",
        seed=3,
        files=(
            ScenarioFile(path="/var/cache/apt/archives/foo.deb", bytes=3000, kind=junk),
            ScenarioFile(path="/tmp/scratch/tmp.bin", bytes=1000, kind=junk),
            ScenarioFile(path="/etc/app/app.conf", bytes=50, kind=protected),
        ),
    )


@pytest.mark.slow
@pytest.mark.parametrize("workers", [1, 2])
def test_the_reward_runs_each_completion_in_the_sandbox(sandbox_settings, workers):
    reward = grpo.EpisodeReward({"small": _scenario()}, sandbox_settings, workers=workers)
    logged: dict[str, float] = {}
    completions = [
        [{"role": "assistant", "content": c}]
        for c in (FREE_JUNK, CRASH, HARMLESS, DAMAGE, "no code")
    ]
    rewards = reward(
        prompts=[[{"role": "user", "content": "free space"}]] * 5,
        completions=completions,
        task_id=["t/code"] * 5,
        scenario=["small"] * 5,
        log_metric=logged.__setitem__,
    )
    # freed 3000 of 4000; crashed (-0.5); ran, freed nothing; damage (-1); no program (-0.5)
    assert rewards == pytest.approx([0.75, -0.5, 0.0, -1.0, -0.5])
    assert reward.episodes == 5
    assert reward.ran == 3
    assert logged["episodes/run"] == 5
    assert logged["episodes/ran_share"] == pytest.approx(3 / 5)
    assert logged["episodes/reward_mean"] == pytest.approx(sum(rewards) / 5)
    assert logged["episodes/reward_spread"] > 0


def _train_config(dataset: Path, model: str, out: Path, objective: str, **section) -> TrainConfig:
    schedule = {
        "max_steps": 4, "batch_size": 2, "gradient_accumulation": 1, "max_length": 512,
        "learning_rate": 5e-3, "save_steps": 100,
    } | section  # fmt: skip
    return TrainConfig(
        dataset=str(dataset),
        base_model=model,
        out=str(out),
        objective=objective,
        **{objective: schedule},
    )


@pytest.mark.slow
@pytest.mark.parametrize("objective", ["sft", "kto"])
def test_adapter_moves_and_the_loss_falls_on_a_fixed_batch(
    objective, objective_dataset, tiny_model, tmp_path
):
    from agir_retrain.tasks.training.metrics import read_metrics
    from agir_retrain.tasks.training.program import prepare, run

    prepared = prepare(_train_config(objective_dataset, tiny_model, tmp_path / "out", objective))
    model = prepared.trainer.model
    before = {n: p.detach().clone() for n, p in model.named_parameters() if "lora_" in n}
    loss_before = prepared.trainer.evaluate()["eval_loss"]
    result = run(prepared)
    assert result.metrics.objective == objective
    assert result.metrics.train.global_step == 4
    changed = [
        n for n, p in model.named_parameters() if "lora_" in n and not torch.equal(p, before[n])
    ]
    assert len(changed) == len(before)
    assert result.metrics.evaluation["overall"].loss < loss_before
    out = tmp_path / "out"
    assert (out / "adapter_model.safetensors").is_file()
    assert read_metrics(out).objective == objective
    assert json.loads((out / "adapter_config.json").read_text())["peft_type"] == "LORA"


PROGRAM = "```python\nimport os\nos.remove('/var/cache/apt/archives/foo.deb')\n```"


def _fit_fully(base: str, rows: list[dict], out: Path, steps: int) -> None:
    """Fit every weight of the tiny model to the rows (Adam, high rate), so its samples can run.

    A random tiny model writes no program that runs: every reward of a group would be
    equal and GRPO would learn nothing. After this, sampled programs sometimes run and
    sometimes not, so rewards differ within a group.
    """
    from transformers import AutoModelForCausalLM, AutoTokenizer

    torch.manual_seed(0)
    tokenizer = AutoTokenizer.from_pretrained(base)
    model = AutoModelForCausalLM.from_pretrained(base, dtype=torch.float32)
    texts = [
        tokenizer.apply_chat_template(r["prompt"] + r["completion"], tokenize=False) for r in rows
    ]
    batch = tokenizer(texts, return_tensors="pt", padding=True)
    labels = batch["input_ids"].masked_fill(batch["attention_mask"] == 0, -100)
    optimizer = torch.optim.Adam(model.parameters(), lr=3e-3)
    for _ in range(steps):
        loss = model(**batch, labels=labels).loss
        loss.backward()
        optimizer.step()
        optimizer.zero_grad()
    assert loss.item() < 1.0  # it learnt the program, mostly
    model.save_pretrained(out)
    tokenizer.save_pretrained(out)


@pytest.mark.slow
def test_grpo_steps_run_the_sandbox_and_rewards_differ_within_a_group(
    sandbox_settings, tiny_model, tmp_path
):
    from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

    from agir_retrain.tasks.environment.scenario import scenario_to_json
    from agir_retrain.tasks.training.program import prepare, run
    from agir_retrain.tasks.training.tracking import tracking_session

    scenario = tmp_path / "small.json"
    scenario.write_bytes(scenario_to_json(_scenario()))
    rows = [
        {
            "prompt": [{"role": "user", "content": f"Free space on the disk, task {i}."}],
            "completion": [{"role": "assistant", "content": PROGRAM}],
            "prompt_kind": "code",
            "run_id": f"r{i}",
        }
        for i in range(4)
    ]
    write_rows(tmp_path / "data" / "sft" / "train.jsonl", rows)
    _fit_fully(tiny_model, rows, tmp_path / "fitted", steps=60)
    prompts, generations, steps = 1, 4, 2
    config = TrainConfig(
        dataset=str(tmp_path / "data"),
        base_model=str(tmp_path / "fitted"),
        out=str(tmp_path / "grpo"),
        objective="grpo",
        quantize=False,
        grpo={
            "max_steps": steps, "batch_size": prompts, "gradient_accumulation": 1,
            "num_generations": generations, "max_completion_length": 40, "max_prompt_length": 64,
            "learning_rate": 1e-3, "scenarios": [str(scenario)], "workers": 2, "save_steps": 1000,
            "environment": sandbox_settings.model_dump(),
        },
        # GRPO's own per-step figures reach the trackers, not only metrics.json.
        tracking={"report_to": ["tensorboard"]},
    )  # fmt: skip
    with tracking_session(config.out, config.tracking) as tracked:
        prepared = prepare(config)
        reward = prepared.trainer.reward_funcs[0]
        model = prepared.trainer.model
        before = {n: p.detach().clone() for n, p in model.named_parameters() if "lora_" in n}
        result = run(prepared, tracked=tracked)

    assert reward.episodes == prompts * generations * steps  # every completion ran in the sandbox
    spreads = [step["episodes/reward_spread"] for step in reward.steps]
    assert len(spreads) == steps
    assert max(spreads) > 0  # rewards differ within a group: there is something to learn
    assert reward.ran > 0  # some sampled programs ran
    assert any(not torch.equal(p, before[n]) for n, p in model.named_parameters() if "lora_" in n)
    logged = [row for row in result.metrics.log_history if "episodes/run" in row]
    assert [row["episodes/run"] for row in logged] == [4.0, 8.0]
    assert all("episodes/ran_share" in row and "reward_std" in row for row in logged)
    board = EventAccumulator(str(tmp_path / "grpo" / "runs" / "grpo"), size_guidance={"scalars": 0})
    board.Reload()
    for key in ("episodes/run", "episodes/ran_share", "episodes/reward_spread"):
        series = [(event.step, event.value) for event in board.Scalars(f"train/{key}")]
        assert series == [(row["step"], pytest.approx(row[key], rel=1e-6)) for row in logged], key
    assert (tmp_path / "grpo" / "adapter_model.safetensors").is_file()
    assert (tmp_path / "grpo" / "reward.png").is_file()
