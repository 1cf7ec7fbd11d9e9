"""The generations' table and plot: what each model learned from, made, cost, and scored.

One row per generation (0 is the base): the runs it collected by class, the rows it was
trained on, training time and peak memory, and the yardstick on the held-out tasks
(pass@1, ran rate, freed share, damage, each with its interval, and the paired difference
against the base). ``table_cells`` renders it once; the terminal, the Prefect artifact,
``improve.md`` and the model card all print those cells.
"""

from __future__ import annotations

import io
from collections.abc import Sequence
from dataclasses import asdict, dataclass, field

from agir_retrain.tasks.evaluation.metrics import (
    EvalReport,
    Interval,
    ModelMetrics,
    PairedDifference,
    format_interval,
)
from agir_retrain.tasks.rendering import markdown_table

CLASS_SHORT = {"first_try": "1st", "mixed": "mix", "never_freed": "ran", "no_runnable": "none"}


@dataclass(frozen=True, slots=True, kw_only=True)
class GenerationRow:
    """One generation: its model, what it learned from, what it made and cost, how it scored."""

    generation: int
    model: str
    learned_from: str  # "-" for the base
    collected: dict[str, int] | None  # runs it collected, by class; None: it collected none
    training_rows: int | None
    train_seconds: float | None
    peak_memory_bytes: int | None
    metrics: ModelMetrics
    vs_base: PairedDifference | None
    stage_seconds: dict[str, float] = field(default_factory=dict)  # wall time of each stage


@dataclass(frozen=True, slots=True, kw_only=True)
class ImproveReport:
    """Every generation's row, and why the loop stopped early (if it did)."""

    objective: str
    rows: tuple[GenerationRow, ...]
    confidence: float
    stopped_early: str | None = None

    def to_dict(self) -> dict[str, object]:
        """JSON-ready values (``improve.json``)."""
        return asdict(self)


def generation_rows(
    report: EvalReport,
    *,
    labels: Sequence[str],
    learned_from: Sequence[str],
    collected: Sequence[dict[str, int] | None],
    training: Sequence[tuple[int, float, int | None] | None],
    stage_seconds: Sequence[dict[str, float]] | None = None,
) -> list[GenerationRow]:
    """Join each generation's facts with its model's metrics in the last evaluation."""
    metrics = {m.model: m for m in report.models}
    versus = {d.model: d for d in report.differences if d.baseline == labels[0]}
    rows = []
    for number, label in enumerate(labels):
        trained = training[number]
        rows.append(
            GenerationRow(
                generation=number,
                model=label,
                learned_from=learned_from[number],
                collected=collected[number],
                training_rows=trained[0] if trained else None,
                train_seconds=trained[1] if trained else None,
                peak_memory_bytes=trained[2] if trained else None,
                metrics=metrics[label],
                vs_base=versus.get(label),
                stage_seconds=dict(stage_seconds[number]) if stage_seconds else {},
            )
        )
    return rows


FACTS = (
    "gen",
    "model",
    "learned from",
    "runs collected (1st/mix/ran/none)",
    "training rows",
    "train time",
    "peak memory",
    "wall time by stage (min)",
)
YARDSTICK = (
    "gen",
    "model",
    "pass@1",
    "ran (exit 0)",
    "freed share",
    "damage",
    "Δ pass@1 vs base",
    "Δ ran vs base",
)


def table_cells(report: ImproveReport) -> tuple[list[list[str]], list[list[str]]]:
    """The two tables as cells (header row first): what each generation learned from, made
    and cost; and how it scored on the held-out tasks."""
    facts, yardstick = [list(FACTS)], [list(YARDSTICK)]
    for row in report.rows:
        m, d = row.metrics, row.vs_base
        collected = (
            "/".join(str(row.collected.get(k, 0)) for k in CLASS_SHORT) if row.collected else "-"
        )
        facts.append(
            [
                str(row.generation),
                row.model,
                row.learned_from,
                collected,
                "-" if row.training_rows is None else str(row.training_rows),
                "-" if row.train_seconds is None else f"{row.train_seconds / 60:.1f} min",
                "-"
                if row.peak_memory_bytes is None
                else f"{row.peak_memory_bytes / 2**30:.2f} GiB",
                " · ".join(f"{k} {v / 60:.1f}" for k, v in row.stage_seconds.items()) or "-",
            ]
        )
        yardstick.append(
            [
                str(row.generation),
                row.model,
                _interval(m.pass_at_1),
                _interval(m.ran_rate),
                _interval(m.mean_freed_share),
                _interval(m.damage_rate),
                "-" if d is None else _interval(d.pass_at_1),
                "-" if d is None else _interval(d.ran_rate),
            ]
        )
    return facts, yardstick


def report_markdown(report: ImproveReport) -> str:
    """The table in markdown, with a line on how the intervals were made."""
    facts, yardstick = table_cells(report)
    pct = round(100 * report.confidence)
    lines = [
        f"Objective: {report.objective}. Rates are means over the held-out tasks with {pct}% "
        "bootstrap intervals; differences are paired over the same tasks.",
        "",
        markdown_table(facts[1:], headers=facts[0]),
        "",
        markdown_table(yardstick[1:], headers=yardstick[0]),
    ]
    if report.stopped_early:
        lines += ["", f"Stopped early: {report.stopped_early}"]
    return "\n".join(lines)


def plot_png(report: ImproveReport) -> bytes:
    """pass@1 and ran rate per generation, with intervals; the same report gives the same bytes."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    generations = [row.generation for row in report.rows]
    fig, axes = plt.subplots(1, 2, figsize=(8, 3.6), dpi=100)
    for ax, (name, title) in zip(
        axes, (("pass_at_1", "pass@1"), ("ran_rate", "ran (exit 0)")), strict=True
    ):
        values = [getattr(row.metrics, name) for row in report.rows]
        points = [v.value for v in values]
        errors = [
            [max(0.0, v.value - v.ci_low) for v in values],
            [max(0.0, v.ci_high - v.value) for v in values],
        ]
        ax.errorbar(generations, points, yerr=errors, marker="o", capsize=5, color="#4c72b0")
        ax.set_xticks(generations, [row.model for row in report.rows])
        ax.set_title(title)
        ax.set_ylim(0, max(0.1, *(v.ci_high for v in values)) * 1.1)
        ax.set_xlabel("generation")
        for x, point in zip(generations, points, strict=True):
            ax.annotate(f"{point:.3f}", (x, point), ha="left", va="bottom", fontsize=8)
    pct = round(100 * report.confidence)
    fig.suptitle(f"{report.objective}: held-out tasks, {pct}% bootstrap intervals", fontsize=9)
    fig.tight_layout()
    buffer = io.BytesIO()
    fig.savefig(buffer, format="png", metadata={"Software": None})
    plt.close(fig)
    return buffer.getvalue()


def _interval(value: Interval) -> str:
    return format_interval(value.value, value.ci_low, value.ci_high)
