"""Training metrics: one frozen type, written and read back, rendered by one rows function."""

from __future__ import annotations

import json

from agir_retrain.tasks.training.metrics import (
    ChatSummary,
    DataSummary,
    EvalSplit,
    ParameterSummary,
    SplitData,
    TrainingMetrics,
    TrainSummary,
    metrics_bytes,
    metrics_rows,
    read_metrics,
)

# metrics.json as the program wrote it before the type existed (no objective, no chat).
EARLIER = {
    "base_model": "/models/tiny",
    "reference": "adapter",
    "quantized": True,
    "world_size": 1,
    "resumed_from_checkpoint": None,
    "parameters": {
        "trainable": 32768,
        "total": 200000,
        "trainable_percent": 16.384,
        "lora_targets": ["k_proj", "q_proj"],
    },
    "data": {
        "train_file": "d/dpo/train.jsonl",
        "eval_file": "d/dpo/eval.jsonl",
        "train": {
            "rows_in": 8,
            "rows_trimmed": 2,
            "rows_dropped": 1,
            "rows_out": 7,
            "dropped_by_trl": 0,
        },
        "eval": {"rows_in": 6, "rows_trimmed": 0, "rows_dropped": 0, "rows_out": 6},
    },
    "train": {
        "train_runtime": 12.5,
        "train_samples_per_second": 0.5,
        "train_loss": 0.55,
        "epoch": 0.75,
        "global_step": 3,
    },
    "evaluation": {
        "overall": {"loss": 0.41, "rewards/accuracies": 0.8333, "rewards/margins": 0.97, "rows": 6},
    },
    "log_history": [{"loss": 0.6931, "step": 1}],
}


def _metrics(**changes) -> TrainingMetrics:
    values = {
        "objective": "dpo",
        "base_model": "/models/tiny",
        "reference": "adapter",
        "quantized": True,
        "world_size": 2,
        "resumed_from_checkpoint": "out/checkpoint-4",
        "parameters": ParameterSummary(
            trainable=10, total=1000, trainable_percent=1.0, lora_targets=("q_proj",)
        ),
        "data": DataSummary(
            train_file="t.jsonl",
            eval_file=None,
            train=SplitData(
                rows_in=5, rows_trimmed=1, rows_dropped=2, rows_out=3, dropped_by_trl=1
            ),
            eval=SplitData(rows_in=0, rows_trimmed=0, rows_dropped=0, rows_out=0),
            chat=ChatSummary(
                system_role=False,
                consecutive_turns=False,
                conversations=5,
                changed=4,
                turns_merged=8,
                systems_folded=4,
            ),
        ),
        "train": TrainSummary(
            global_step=8,
            train_loss=0.5,
            train_runtime_s=3.0,
            epoch=1.0,
            peak_gpu_memory_bytes=3 * 2**30,
            values={"train_samples_per_second": 2.5},
        ),
        "evaluation": {"natural": EvalSplit(rows=4, loss=0.6, values={"rewards/accuracies": 0.75})},
        "log_history": ({"loss": 0.69, "step": 1}, {"loss": float("nan"), "step": 2}),
    }
    return TrainingMetrics(**(values | changes))


def test_written_and_read_back(tmp_path):
    metrics = _metrics(log_history=({"loss": 0.69, "step": 1},))
    (tmp_path / "metrics.json").write_bytes(metrics_bytes(metrics))
    assert read_metrics(tmp_path) == metrics


def test_not_finite_numbers_are_written_as_null():
    written = json.loads(metrics_bytes(_metrics()))
    assert written["log_history"][1] == {"loss": None, "step": 2}


def test_the_json_layout_is_the_one_renderers_read():
    written = json.loads(metrics_bytes(_metrics()))
    assert written["train"]["global_step"] == 8
    assert written["train"]["train_loss"] == 0.5
    assert written["train"]["train_samples_per_second"] == 2.5
    assert written["evaluation"]["natural"] == {"rows": 4, "loss": 0.6, "rewards/accuracies": 0.75}
    assert written["parameters"]["lora_targets"] == ["q_proj"]
    assert written["data"]["chat"]["systems_folded"] == 4


def test_earlier_files_read(tmp_path):
    (tmp_path / "metrics.json").write_text(json.dumps(EARLIER))
    metrics = read_metrics(tmp_path / "metrics.json")
    assert metrics.objective == "dpo"
    assert metrics.train.global_step == 3
    assert metrics.train.train_runtime_s == 12.5
    assert metrics.train.values == {"train_samples_per_second": 0.5}
    assert metrics.evaluation["overall"] == EvalSplit(
        rows=6, loss=0.41, values={"rewards/accuracies": 0.8333, "rewards/margins": 0.97}
    )
    assert metrics.data.eval.dropped_by_trl == 0
    assert metrics.data.chat == ChatSummary()


def test_rows():
    assert metrics_rows(_metrics()) == [
        ("objective / reference", "dpo / adapter"),
        ("trainable / total parameters", "10 / 1,000 (1.000%)"),
        ("steps", "8"),
        ("train loss", "0.5000"),
        ("train time", "3.0 s"),
        ("train rows in / shortened / dropped", "5 / 1 / 3"),  # 2 by fitting + 1 by TRL
        ("eval rows in / shortened / dropped", "0 / 0 / 0"),
        (
            "prompts conformed to the chat template",
            "4 of 5 (8 turns merged, 4 system messages folded)",
        ),
        ("peak GPU memory", "3.00 GiB"),
        ("tracked in", "not tracked"),
        ("eval natural (4 rows)", "loss 0.6000, reward accuracy 0.750, reward margin n/a"),
    ]
