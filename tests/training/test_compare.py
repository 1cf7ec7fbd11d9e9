"""The comparison table: rows from an evaluation report and the adapters' training metrics."""

from __future__ import annotations

import json
import math

from agir_retrain.tasks.evaluation.metrics import EvalReport, Interval, ModelMetrics
from agir_retrain.tasks.training.compare import (
    compare_json,
    compare_markdown,
    compare_png,
    compare_rows,
)
from agir_retrain.tasks.training.metrics import (
    DataSummary,
    ParameterSummary,
    SplitData,
    TrainingMetrics,
    TrainSummary,
)


def _model(name: str, value: float) -> ModelMetrics:
    interval = Interval(value=value, ci_low=max(0.0, value - 0.1), ci_high=min(1.0, value + 0.1))
    return ModelMetrics(
        model=name, tasks=4, samples=8, code_found_rate=interval, ran_rate=interval,
        pass_at_1=interval, pass_at_k=interval, mean_freed_share=interval,
        damage_rate=Interval(value=math.nan, ci_low=math.nan, ci_high=math.nan),
        timeout_rate=interval, harness_excluded=0,
    )  # fmt: skip


def _metrics(steps: int, seconds: float) -> TrainingMetrics:
    split = SplitData(rows_in=1, rows_trimmed=0, rows_dropped=0, rows_out=1)
    return TrainingMetrics(
        objective="sft", base_model="b", reference="none", quantized=True, world_size=1,
        resumed_from_checkpoint=None,
        parameters=ParameterSummary(trainable=1, total=2, trainable_percent=50.0, lora_targets=()),
        data=DataSummary(train_file="t", eval_file=None, train=split, eval=split),
        train=TrainSummary(global_step=steps, train_runtime_s=seconds, peak_gpu_memory_bytes=2**31),
        evaluation={},
    )  # fmt: skip


def test_rows_join_quality_and_cost_in_the_reports_order():
    report = EvalReport(
        k=1, confidence=0.95, resamples=100, seed=0,
        models=(_model("base", 0.0), _model("sft", 0.5), _model("dpo", 0.25)), differences=(),
    )  # fmt: skip
    rows = compare_rows(report, {"sft": _metrics(3, 12.5), "dpo": _metrics(4, 20.0)})
    assert [r.model for r in rows] == ["base", "sft", "dpo"]
    assert rows[0].train_steps is None  # the base was not trained
    assert (rows[1].train_steps, rows[1].train_time_s) == (3, 12.5)
    assert rows[2].pass_at_1.value == 0.25

    markdown = compare_markdown(rows, 0.95)
    assert "| sft | 0.500 [0.400, 0.600] |" in markdown
    assert "| 3 | 12.5 s | 2.00 GiB |" in markdown
    assert "95% bootstrap intervals" in markdown
    values = json.loads(compare_json(rows))  # strict JSON: an undefined rate is null
    assert values[1]["damage_rate"]["value"] is None
    assert compare_json(rows) == compare_json(rows)
    assert compare_png(rows).startswith(b"\x89PNG")
