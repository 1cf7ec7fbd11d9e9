"""What the command line prints: summary tables and progress bars."""

from __future__ import annotations

from collections.abc import Iterable
from typing import TYPE_CHECKING, Any

from rich.console import Console
from rich.markup import escape
from rich.progress import (
    BarColumn,
    DownloadColumn,
    Progress,
    TimeRemainingColumn,
    TransferSpeedColumn,
)
from rich.table import Table

from agir_retrain.tasks.rendering import Row
from agir_retrain.tasks.training.metrics import TrainingMetrics, metrics_rows

if TYPE_CHECKING:  # the reports' modules import polars; the CLI starts without it
    from agir_retrain.tasks.dataset.build_report import BuildReport
    from agir_retrain.tasks.runs.report import Report

# Diagnostics and progress go to stderr; the tables are the output, on stdout.
stderr = Console(stderr=True)


def print_train_summary(metrics: TrainingMetrics, out: str) -> None:
    """Print the training metrics' rows (the same rows as the artifact and the model card)."""
    print_rows(metrics_rows(metrics), title=f"train -> {out}")


def print_retrain(result: Any) -> None:
    """Print the dataset, training and archive summaries of a retrain run."""
    print_build_report(result.report, result.dataset)
    print_train_summary(result.metrics, result.adapter)
    table = Table(title="what was made", show_header=True)
    table.add_column("what")
    table.add_column("where", overflow="fold")
    table.add_row("dataset (training files, tables, report)", result.dataset)
    table.add_row("adapter, metrics, curves, model card", result.adapter)
    table.add_row("archive (verified)", result.archive)
    if getattr(result, "evaluation", None) is not None:
        from agir_retrain.flows.cli_evaluate import print_evaluation

        print_evaluation(result.evaluation.report, result.evaluation.out)
        table.add_row("evaluation (episodes, eval.json, plot)", result.evaluation.out)
    Console().print(table)


def print_build_report(report: BuildReport, out: str) -> None:
    """Print the build report's rows, then where the training files are."""
    from agir_retrain.tasks.dataset.build_report import build_rows
    from agir_retrain.tasks.filenames import LABELLED_TRAIN, PREFERENCE_EVAL, PREFERENCE_TRAIN

    print_rows(build_rows(report), title=f"dataset -> {out}", value_header="count")
    Console().print(
        f"preference files: {out}/{PREFERENCE_TRAIN}, {out}/{PREFERENCE_EVAL}; "
        f"labelled: {out}/{LABELLED_TRAIN}"
    )


def print_rows(rows: Iterable[Row], *, title: str, value_header: str = "value") -> None:
    """Print a result's rows (the same rows its markdown artifact shows) as a table."""
    table = Table(title=escape(title), show_header=True)
    table.add_column("what")
    table.add_column(value_header, justify="right")
    for what, value in rows:
        table.add_row(escape(what), escape(value))
    Console().print(table)


def print_cells(cells: list[list[str]], *, title: str, split: bool = False) -> None:
    """Print a table given as cells (header row first); ``split`` puts an interval
    (``0.12 [0.05, 0.20]``) below its figure."""
    header, *rows = cells
    table = Table(title=escape(title), show_header=True)
    for index, name in enumerate(header):
        table.add_column(escape(name), justify="left" if index < 2 else "right")
    for row in rows:
        table.add_row(*(escape(cell.replace(" [", "\n[") if split else cell) for cell in row))
    Console().print(table)


def progress() -> Progress:
    """A byte-progress bar on stderr."""
    return Progress(
        "[progress.description]{task.description}",
        BarColumn(),
        DownloadColumn(),
        TransferSpeedColumn(),
        TimeRemainingColumn(),
        console=stderr,
        transient=True,
    )


def print_report(report: Report, out: str) -> None:
    """Print files, runs by class, pairs by rule and quarantine reasons."""
    from agir_retrain.tasks.dataset.build_report import ingest_rows

    print_rows(ingest_rows(report), title=f"ingest -> {out}", value_header="count")
