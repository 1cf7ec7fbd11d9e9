"""Metrics of an evaluation: per model, rates with bootstrap intervals over tasks; per pair of
models, paired differences.

Every statistic is a mean over tasks of a per-task value (the mean over that task's
samples), so each task weighs the same and the bootstrap resamples tasks, the unit that
was drawn. ``pass_at_k`` is the unbiased estimator ``1 - C(n-c, k) / C(n, k)`` per task
(n samples, c successes), averaged over tasks; ``pass_at_1`` is the same with k = 1
(``c / n``). Resamples are seeded from (seed, model labels), so the same episodes give
the same intervals whatever else is in the report.

The report is rendered once: ``metric_rows`` yields its rows, and the markdown table,
the terminal table and ``eval.json`` are all built from them.
"""

from __future__ import annotations

import hashlib
import math
from collections.abc import Iterator, Sequence
from dataclasses import dataclass

import numpy as np
import polars as pl

from agir_retrain.tasks.errors import AgirError

# The rates of a model, in report order, with their column labels.
RATES: dict[str, str] = {
    "code_found_rate": "code found",
    "ran_rate": "ran (exit 0)",
    "pass_at_1": "pass@1",
    "pass_at_k": "pass@k",
    "mean_freed_share": "freed share",
    "damage_rate": "damage",
    "timeout_rate": "timeout",
}
DIFFERENCES: dict[str, str] = {
    "pass_at_1": "Δ pass@1",
    "ran_rate": "Δ ran",
    "mean_freed_share": "Δ freed share",
}
_SEED_MASK = (1 << 63) - 1


class MetricsError(AgirError):
    """Episodes cannot be summarised as asked (no episodes, k larger than a task's samples)."""


@dataclass(frozen=True, slots=True, kw_only=True)
class Interval:
    """A point estimate and its bootstrap confidence interval."""

    value: float
    ci_low: float
    ci_high: float


@dataclass(frozen=True, slots=True, kw_only=True)
class ModelMetrics:
    """One model's results over the tasks it was run on."""

    model: str
    tasks: int
    samples: int  # episodes, over all tasks (harness failures left out)
    harness_excluded: int  # episodes the sandbox failed (stopped_by "harness"): not scored
    code_found_rate: Interval
    ran_rate: Interval
    pass_at_1: Interval
    pass_at_k: Interval
    mean_freed_share: Interval
    damage_rate: Interval
    timeout_rate: Interval


@dataclass(frozen=True, slots=True, kw_only=True)
class PairedDifference:
    """``model`` minus ``baseline`` on the tasks both were run on (paired bootstrap)."""

    model: str
    baseline: str
    tasks: int
    pass_at_1: Interval
    ran_rate: Interval
    mean_freed_share: Interval


@dataclass(frozen=True, slots=True, kw_only=True)
class EvalReport:
    """Every model's metrics and every pair's differences, with how the intervals were made."""

    k: int
    confidence: float
    resamples: int
    seed: int
    models: tuple[ModelMetrics, ...]
    differences: tuple[PairedDifference, ...]


@dataclass(frozen=True, slots=True, kw_only=True)
class MetricRow:
    """One figure of a report: a count (no interval) or a rate with its interval."""

    section: str  # "models" or "differences"
    model: str
    baseline: str | None  # the other model of a difference
    metric: str
    value: float | int
    ci_low: float | None = None
    ci_high: float | None = None


def pass_at_k(n: int, c: int, k: int) -> float:
    """The unbiased pass@k of one task: ``1 - C(n-c, k) / C(n, k)`` (n samples, c passed)."""
    if not 0 <= c <= n or not 1 <= k <= n:
        raise MetricsError(f"pass@k needs 0 <= c <= n and 1 <= k <= n, got n={n}, c={c}, k={k}")
    if n - c < k:  # every draw of k samples holds a success
        return 1.0
    return 1.0 - math.comb(n - c, k) / math.comb(n, k)


def _seed(seed: int, *labels: str) -> int:
    key = "\x1f".join([str(seed), *labels]).encode()
    return int.from_bytes(hashlib.blake2b(key, digest_size=8).digest(), "big") & _SEED_MASK


def _resample_means(values: np.ndarray, resamples: int, seed: int, confidence: float) -> np.ndarray:
    """Lower and upper percentile of resampled means, for each column of ``values`` (tasks x m)."""
    rng = np.random.default_rng(seed)
    picks = rng.integers(0, values.shape[0], size=(resamples, values.shape[0]))
    means = values[picks].mean(axis=1)  # resamples x m
    tail = 100 * (1 - confidence) / 2
    return np.percentile(means, [tail, 100 - tail], axis=0)  # 2 x m


def _intervals(values: np.ndarray, resamples: int, seed: int, confidence: float) -> list[Interval]:
    bounds = _resample_means(values, resamples, seed, confidence)
    points = values.mean(axis=0)
    return [
        Interval(value=float(points[i]), ci_low=float(bounds[0, i]), ci_high=float(bounds[1, i]))
        for i in range(values.shape[1])
    ]


def per_task(episodes: pl.DataFrame, k: int) -> pl.DataFrame:
    """One row per (model, task): samples, successes and each per-task rate."""
    frame = (
        episodes.group_by("model", "task_id")
        .agg(
            pl.len().alias("n"),
            pl.col("success").sum().alias("c"),
            pl.col("code_found").mean().alias("code_found_rate"),
            (pl.col("exit_code") == 0).fill_null(False).mean().alias("ran_rate"),
            pl.col("freed_share").mean().alias("mean_freed_share"),
            (pl.col("protected_damaged").list.len() > 0).mean().alias("damage_rate"),
            (pl.col("stopped_by").cast(pl.String) == "timeout")
            .fill_null(False)
            .mean()
            .alias("timeout_rate"),
        )
        .sort("model", "task_id")
    )
    short = frame.filter(pl.col("n") < k)
    if short.height:
        row = short.row(0, named=True)
        raise MetricsError(
            f"pass@{k} needs at least {k} samples per task, but task {row['task_id']!r} of "
            f"model {row['model']!r} has {row['n']}: lower k or sample more"
        )
    at_k = [pass_at_k(n, c, k) for n, c in frame.select("n", "c").iter_rows()]
    return frame.with_columns(
        (pl.col("c") / pl.col("n")).alias("pass_at_1"),
        pl.Series("pass_at_k", at_k, dtype=pl.Float64),
    )


def compute_report(
    episodes: pl.DataFrame,
    *,
    models: Sequence[str] | None = None,
    k: int | None = None,
    resamples: int = 1000,
    confidence: float = 0.95,
    seed: int = 0,
) -> EvalReport:
    """Summarise episodes per model (in ``models`` order; default sorted) and per pair.

    ``k`` defaults to the fewest samples any (model, task) has. Pairs are (earlier,
    later) in model order, the difference being later minus earlier.
    """
    if episodes.height == 0:
        raise MetricsError("no episodes to summarise")
    # An episode the sandbox failed says nothing of the model: left out, and counted
    failed = pl.col("stopped_by").cast(pl.String) == "harness"
    excluded = dict(episodes.filter(failed.fill_null(False)).group_by("model").len().iter_rows())
    episodes = episodes.filter(~failed.fill_null(False))
    if episodes.height == 0:
        raise MetricsError(f"every episode failed in the sandbox (harness): {excluded}")
    present = sorted(episodes.get_column("model").unique().to_list())
    order = list(models) if models is not None else present
    missing = sorted(set(present) - set(order))
    if missing:
        raise MetricsError(f"episodes of models {missing} not among the models named {order}")
    counts = episodes.group_by("model", "task_id").len()
    k = k if k is not None else int(counts.get_column("len").min())  # type: ignore[arg-type]
    tasks = per_task(episodes, k)
    rates = list(RATES)
    by_model: dict[str, pl.DataFrame] = {
        label: tasks.filter(pl.col("model") == label) for label in order
    }
    results = []
    for label in order:
        frame = by_model[label]
        if frame.height == 0:
            raise MetricsError(f"model {label!r} has no episodes")
        values = frame.select(rates).to_numpy().astype(np.float64)
        intervals = _intervals(values, resamples, _seed(seed, label), confidence)
        results.append(
            ModelMetrics(
                model=label,
                tasks=frame.height,
                samples=int(frame.get_column("n").sum()),
                harness_excluded=int(excluded.get(label, 0)),
                **dict(zip(rates, intervals, strict=True)),
            )
        )
    differences = []
    for i, baseline in enumerate(order):
        for model in order[i + 1 :]:
            differences.append(
                _difference(
                    by_model[model],
                    by_model[baseline],
                    model,
                    baseline,
                    resamples,
                    seed,
                    confidence,
                )
            )
    return EvalReport(
        k=k,
        confidence=confidence,
        resamples=resamples,
        seed=seed,
        models=tuple(results),
        differences=tuple(differences),
    )


def _difference(
    model_tasks: pl.DataFrame,
    baseline_tasks: pl.DataFrame,
    model: str,
    baseline: str,
    resamples: int,
    seed: int,
    confidence: float,
) -> PairedDifference:
    """The paired difference over the tasks both models were run on."""
    metrics = list(DIFFERENCES)
    joined = model_tasks.select("task_id", *metrics).join(
        baseline_tasks.select("task_id", *metrics), on="task_id", how="inner", suffix="_base"
    )
    if joined.height == 0:
        nan = Interval(value=math.nan, ci_low=math.nan, ci_high=math.nan)
        return PairedDifference(
            model=model,
            baseline=baseline,
            tasks=0,
            **dict.fromkeys(metrics, nan),
        )
    joined = joined.sort("task_id")
    values = joined.select([(pl.col(m) - pl.col(f"{m}_base")).alias(m) for m in metrics]).to_numpy()
    intervals = _intervals(
        values.astype(np.float64), resamples, _seed(seed, model, baseline), confidence
    )
    return PairedDifference(
        model=model,
        baseline=baseline,
        tasks=joined.height,
        **dict(zip(metrics, intervals, strict=True)),
    )


def metric_rows(report: EvalReport) -> Iterator[MetricRow]:
    """Every figure of the report, models first (counts, then rates), then differences."""
    for m in report.models:
        yield MetricRow(
            section="models", model=m.model, baseline=None, metric="tasks", value=m.tasks
        )
        yield MetricRow(
            section="models", model=m.model, baseline=None, metric="samples", value=m.samples
        )
        yield MetricRow(
            section="models",
            model=m.model,
            baseline=None,
            metric="harness_excluded",
            value=m.harness_excluded,
        )
        for name in RATES:
            yield _row("models", m.model, None, name, getattr(m, name))
    for d in report.differences:
        yield MetricRow(
            section="differences", model=d.model, baseline=d.baseline, metric="tasks", value=d.tasks
        )
        for name in DIFFERENCES:
            yield _row("differences", d.model, d.baseline, name, getattr(d, name))


def _row(
    section: str, model: str, baseline: str | None, name: str, interval: Interval
) -> MetricRow:
    return MetricRow(
        section=section,
        model=model,
        baseline=baseline,
        metric=name,
        value=interval.value,
        ci_low=interval.ci_low,
        ci_high=interval.ci_high,
    )


def format_interval(value: float | int, low: float | None, high: float | None) -> str:
    """``0.120 [0.050, 0.200]`` (a count is printed as is; an undefined figure as n/a)."""
    if low is None:
        return str(value)
    if not math.isfinite(float(value)):
        return "n/a"
    return f"{value:.3f} [{low:.3f}, {high:.3f}]"


def table_cells(report: EvalReport) -> tuple[list[list[str]], list[list[str]]]:
    """The models table and the differences table as cells (header row first), from the rows."""
    model_header = [
        "model",
        "tasks",
        "samples",
        "harness excluded",
        # pass@1 twice would read as a mistake: k = 1 is named as such.
        *(label.replace("pass@k", _at_k(report.k)) for label in RATES.values()),
    ]
    diff_header = ["model - baseline", "tasks", *DIFFERENCES.values()]
    model_rows: dict[str, list[str]] = {}
    diff_rows: dict[tuple[str, str | None], list[str]] = {}
    for row in metric_rows(report):
        cell = format_interval(row.value, row.ci_low, row.ci_high)
        if row.section == "models":
            model_rows.setdefault(row.model, [row.model]).append(cell)
        else:
            key = (row.model, row.baseline)
            diff_rows.setdefault(key, [f"{row.model} - {row.baseline}"]).append(cell)
    return [model_header, *model_rows.values()], [diff_header, *diff_rows.values()]


def _at_k(k: int) -> str:
    return f"pass@{k}" if k > 1 else "pass@k (k=1)"


def report_markdown(report: EvalReport) -> str:
    """The report as markdown tables (what the Prefect artifact and eval.md show)."""
    models, differences = table_cells(report)
    lines = _markdown_table(models)
    if len(differences) > 1:
        lines += ["", *_markdown_table(differences)]
    pct = round(100 * report.confidence)
    lines += [
        "",
        f"Means over tasks; [{pct}% bootstrap interval over tasks, {report.resamples} "
        f"resamples, seed {report.seed}]. pass@{report.k}: unbiased estimator.",
    ]
    return "\n".join(lines)


def _markdown_table(cells: list[list[str]]) -> list[str]:
    header, *body = cells
    return [
        "| " + " | ".join(header) + " |",
        "|" + "---|" * len(header),
        *("| " + " | ".join(row) + " |" for row in body),
    ]
