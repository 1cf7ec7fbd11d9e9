"""The comparison of objectives: one row per model (base and each adapter), one table, one plot.

Quality comes from the evaluation (pass@1, freed share, damage rate, each with its
bootstrap interval); cost from each adapter's ``metrics.json`` (train time, peak GPU
memory). Standard library and matplotlib only.
"""

from __future__ import annotations

import io
import json
from collections.abc import Mapping, Sequence
from dataclasses import asdict, dataclass

from agir_retrain.tasks.evaluation.metrics import EvalReport, Interval, format_interval
from agir_retrain.tasks.training.metrics import TrainingMetrics, _finite

COMPARE_JSON = "compare.json"
COMPARE_MD = "compare.md"
COMPARE_PNG = "compare.png"


@dataclass(frozen=True, slots=True, kw_only=True)
class CompareRow:
    """One model of the comparison: its quality on the held-out tasks and its training cost."""

    model: str  # "base" or the objective
    pass_at_1: Interval
    freed_share: Interval
    damage_rate: Interval
    train_steps: int | None = None
    train_time_s: float | None = None
    peak_gpu_memory_bytes: int | None = None


def compare_rows(report: EvalReport, trained: Mapping[str, TrainingMetrics]) -> list[CompareRow]:
    """A row per evaluated model, in the report's order, with its training figures if trained."""
    rows = []
    for model in report.models:
        metrics = trained.get(model.model)
        rows.append(
            CompareRow(
                model=model.model,
                pass_at_1=model.pass_at_1,
                freed_share=model.mean_freed_share,
                damage_rate=model.damage_rate,
                train_steps=metrics.train.global_step if metrics else None,
                train_time_s=metrics.train.train_runtime_s if metrics else None,
                peak_gpu_memory_bytes=metrics.train.peak_gpu_memory_bytes if metrics else None,
            )
        )
    return rows


def compare_json(rows: Sequence[CompareRow]) -> bytes:
    """The rows as JSON (keys sorted: stable bytes)."""
    values = _finite([asdict(r) for r in rows])
    return json.dumps(values, indent=2, sort_keys=True, allow_nan=False).encode() + b"\n"


def _interval(value: Interval) -> str:
    return format_interval(value.value, value.ci_low, value.ci_high)


def compare_markdown(rows: Sequence[CompareRow], confidence: float) -> str:
    """The comparison as a markdown table."""
    lines = [
        "| model | pass@1 | freed share | damage rate | steps | train time | peak GPU memory |",
        "|---|---|---|---|---|---|---|",
    ]
    for r in rows:
        time = "" if r.train_time_s is None else f"{r.train_time_s:.1f} s"
        memory = (
            "n/a"
            if r.peak_gpu_memory_bytes is None
            else f"{r.peak_gpu_memory_bytes / 2**30:.2f} GiB"
        )
        lines.append(
            f"| {r.model} | {_interval(r.pass_at_1)} | {_interval(r.freed_share)} | "
            f"{_interval(r.damage_rate)} | {'' if r.train_steps is None else r.train_steps} | "
            f"{time} | {memory if r.train_steps is not None else ''} |"
        )
    lines.append("")
    lines.append(f"Means over tasks, {round(100 * confidence)}% bootstrap intervals.")
    return "\n".join(lines) + "\n"


def compare_png(rows: Sequence[CompareRow]) -> bytes:
    """Pass@1, freed share and damage rate by model, with their intervals, as one PNG."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    panels = (
        ("pass@1", "pass_at_1"),
        ("freed share", "freed_share"),
        ("damage rate", "damage_rate"),
    )
    figure, axes = plt.subplots(1, 3, figsize=(4 * 3, 3.2), constrained_layout=True)
    names = [r.model for r in rows]
    for axis, (title, key) in zip(axes, panels, strict=True):
        values = [getattr(r, key) for r in rows]
        points = [v.value for v in values]
        below = [max(0.0, v.value - v.ci_low) for v in values]
        above = [max(0.0, v.ci_high - v.value) for v in values]
        axis.bar(names, points, yerr=[below, above], capsize=4, color="#4c72b0")
        axis.set_title(title)
        axis.set_ylim(0, 1)
        axis.tick_params(axis="x", rotation=30)
    buffer = io.BytesIO()
    figure.savefig(buffer, format="png", dpi=100, metadata={"Software": None})
    plt.close(figure)
    return buffer.getvalue()
