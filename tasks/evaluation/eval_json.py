"""``eval.json``: an evaluation report as JSON, and back (docs/evaluation.md gives its shape)."""

from __future__ import annotations

import math
from typing import Any

from agir_retrain.tasks.evaluation.metrics import (
    DIFFERENCES,
    RATES,
    EvalReport,
    Interval,
    MetricRow,
    ModelMetrics,
    PairedDifference,
    metric_rows,
)


def report_json(report: EvalReport) -> dict[str, Any]:
    """The ``eval.json`` document (its shape is documented in docs/evaluation.md)."""
    models: dict[str, dict[str, Any]] = {}
    differences: dict[tuple[str, str], dict[str, Any]] = {}
    for row in metric_rows(report):
        if row.section == "models":
            models.setdefault(row.model, {})[row.metric] = _json_value(row)
        else:
            entry = differences.setdefault(
                (row.model, row.baseline or ""), {"model": row.model, "baseline": row.baseline}
            )
            entry[row.metric] = _json_value(row)
    return {
        "k": report.k,
        "confidence": report.confidence,
        "bootstrap_resamples": report.resamples,
        "seed": report.seed,
        "models": models,
        "differences": list(differences.values()),
    }


def report_from_json(data: dict[str, Any]) -> EvalReport:
    """The report an ``eval.json`` document holds (``report_json``'s inverse; null is NaN)."""

    def interval(value: dict[str, Any]) -> Interval:
        return Interval(
            value=_number(value["value"]),
            ci_low=_number(value["ci_low"]),
            ci_high=_number(value["ci_high"]),
        )

    models = tuple(
        ModelMetrics(
            model=name,
            tasks=int(entry["tasks"]),
            samples=int(entry["samples"]),
            harness_excluded=int(entry.get("harness_excluded", 0)),
            **{rate: interval(entry[rate]) for rate in RATES},
        )
        for name, entry in data["models"].items()
    )
    differences = tuple(
        PairedDifference(
            model=entry["model"],
            baseline=entry["baseline"],
            tasks=int(entry["tasks"]),
            **{name: interval(entry[name]) for name in DIFFERENCES},
        )
        for entry in data["differences"]
    )
    return EvalReport(
        k=int(data["k"]),
        confidence=float(data["confidence"]),
        resamples=int(data["bootstrap_resamples"]),
        seed=int(data["seed"]),
        models=models,
        differences=differences,
    )


def _json_value(row: MetricRow) -> Any:
    if row.ci_low is None:
        return row.value
    return {
        "value": _finite(row.value),
        "ci_low": _finite(row.ci_low),
        "ci_high": _finite(row.ci_high),
    }


def _finite(value: float | int | None) -> float | int | None:
    """JSON has no NaN: a figure that could not be computed is null."""
    if isinstance(value, float) and not math.isfinite(value):
        return None
    return value


def _number(value: float | None) -> float:
    return math.nan if value is None else float(value)
