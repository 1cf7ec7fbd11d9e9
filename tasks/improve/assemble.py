"""The generations' report, assembled from what each stage left on disk, and where it is written.

Everything is read back from the generations' folders (the last evaluation's ``eval.json``,
each collection's report, each adapter's ``metrics.json``), so a resumed run reports the
same table as one that never stopped.
"""

from __future__ import annotations

from dataclasses import dataclass

import orjson

from agir_retrain.tasks.evaluation.eval_json import report_from_json
from agir_retrain.tasks.improve import plan
from agir_retrain.tasks.improve.layout import ADAPTER_METRICS, COLLECT_REPORT, EVAL_REPORT
from agir_retrain.tasks.improve.report import ImproveReport, generation_rows, plot_png
from agir_retrain.tasks.improve.report import report_markdown as improve_markdown
from agir_retrain.tasks.io import exists, join, read_bytes, write_bytes_atomic, write_json_atomic
from agir_retrain.tasks.objectives import objective
from agir_retrain.tasks.settings.improve import ImproveConfig
from agir_retrain.tasks.training.metrics import TrainingMetrics

IMPROVE_JSON, IMPROVE_MD, IMPROVE_PNG = "improve.json", "improve.md", "improve.png"
CARD_SECTION = "## Generations"


@dataclass(frozen=True, slots=True)
class ImproveResult:
    """Where the generations are, and their report."""

    out: str
    report: ImproveReport


def objective_rows(name: str, dataset: str) -> int:
    """Rows a dataset holds in the training files the objective ``name`` reads."""
    rows = 0
    for split in objective(name).splits:
        location = join(dataset, split.train)
        if exists(location):
            rows += sum(1 for line in read_bytes(location).splitlines() if line.strip())
    return rows


def assemble_report(config: ImproveConfig, evaluated: int, stopped: str | None) -> ImproveResult:
    """The table of generations 0..``evaluated`` from their folders."""
    last = plan.paths(config, evaluated)
    evaluation = report_from_json(orjson.loads(read_bytes(join(last.eval, EVAL_REPORT))))
    numbers = range(evaluated + 1)
    rows = generation_rows(
        evaluation,
        labels=[plan.paths(config, n).label for n in numbers],
        learned_from=[plan.learned_from(config, n) for n in numbers],
        collected=[_collected(config, n) for n in numbers],
        training=[_training(config, n) for n in numbers],
        stage_seconds=[plan.paths(config, n).stage_seconds() for n in numbers],
    )
    report = ImproveReport(
        objective=config.train.objective,
        rows=tuple(rows),
        confidence=evaluation.confidence,
        stopped_early=stopped,
    )
    return ImproveResult(out=config.out, report=report)


def publish_report(config: ImproveConfig, report: ImproveReport) -> tuple[str, bytes]:
    """Write improve.json, improve.md and improve.png, and the table into the newest model card."""
    markdown = improve_markdown(report)
    png = plot_png(report)
    write_json_atomic(join(config.out, IMPROVE_JSON), report.to_dict())
    write_bytes_atomic(join(config.out, IMPROVE_PNG), png)
    write_bytes_atomic(
        join(config.out, IMPROVE_MD), f"{markdown}\n\n![generations]({IMPROVE_PNG})\n".encode()
    )
    newest = report.rows[-1].generation
    if newest > 0:
        _add_to_card(plan.paths(config, newest).adapter, markdown, png)
    return markdown, png


def _add_to_card(adapter: str, markdown: str, png: bytes) -> None:
    """Put the generations' table (and its plot, beside it) into the adapter's model card."""
    card = join(adapter, "README.md")
    text = read_bytes(card).decode() if exists(card) else ""
    text = text.split(f"\n{CARD_SECTION}\n", 1)[0].rstrip("\n")
    write_bytes_atomic(join(adapter, IMPROVE_PNG), png)
    section = f"\n\n{CARD_SECTION}\n\n{markdown}\n\n![generations]({IMPROVE_PNG})\n"
    write_bytes_atomic(card, (text + section).encode())


def _collected(config: ImproveConfig, number: int) -> dict[str, int] | None:
    location = join(plan.paths(config, number).collect, COLLECT_REPORT)
    if not exists(location):
        return None
    return dict(orjson.loads(read_bytes(location))["runs_by_class"])


def _training(config: ImproveConfig, number: int) -> tuple[int, float, int | None] | None:
    if number == 0:
        return None
    location = join(plan.paths(config, number).adapter, ADAPTER_METRICS)
    if not exists(location):
        return None
    metrics = TrainingMetrics.from_json(orjson.loads(read_bytes(location)))
    train = metrics.train
    peak = train.peak_gpu_memory_bytes or train.peak_host_memory_bytes
    return metrics.data.train.rows_out, train.train_runtime_s or 0.0, peak


def record_stage(config: ImproveConfig, number: int, stage: str, seconds: float) -> None:
    """Add a finished stage's wall time to the generation's ``timing.json``."""
    location = plan.paths(config, number).timing
    timing = plan.paths(config, number).stage_seconds()
    timing[stage] = round(seconds, 1)
    write_json_atomic(location, timing)
