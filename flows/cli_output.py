"""What the command line prints: summary tables and progress bars."""

from __future__ import annotations

from typing import Any

from rich.console import Console
from rich.progress import (
    BarColumn,
    DownloadColumn,
    Progress,
    TimeRemainingColumn,
    TransferSpeedColumn,
)
from rich.table import Table

# Diagnostics and progress go to stderr; the tables are the output, on stdout.
stderr = Console(stderr=True)


def print_train_summary(metrics: dict[str, Any], out: str) -> None:
    """Print trainable parameters, steps, loss and evaluation by provenance."""
    table = Table(title=f"train -> {out}", show_header=True)
    table.add_column("what")
    table.add_column("value", justify="right")
    params, train_metrics = metrics["parameters"], metrics["train"]
    table.add_row("trainable / total parameters", f"{params['trainable']:,} / {params['total']:,}")
    table.add_row("steps", str(train_metrics["global_step"]))
    table.add_row("train loss", f"{train_metrics.get('train_loss', float('nan')):.4f}")
    for split, values in metrics.get("evaluation", {}).items():
        table.add_row(
            f"eval {split}: reward accuracy / margin",
            f"{values['rewards/accuracies']:.3f} / {values['rewards/margins']:.4f}",
        )
    Console().print(table)


def print_retrain(result: Any) -> None:
    """Print the dataset, training and archive summaries of a retrain run."""
    print_build_report(result.report, result.dataset)
    print_train_summary(result.metrics, result.adapter)
    table = Table(title="what was made", show_header=True)
    table.add_column("what")
    table.add_column("where", overflow="fold")
    table.add_row("dataset (DPO, KTO, tables, report)", result.dataset)
    table.add_row("adapter, metrics, curves, model card", result.adapter)
    table.add_row("archive (verified)", result.archive)
    Console().print(table)


def print_build_report(report: dict[str, Any], out: str) -> None:
    """Print the ingest counts plus DPO/KTO rows, garbling and timing."""
    print_report(report, out)
    export, garbling = report["export"], report["garbling"]
    table = Table(title="dataset", show_header=True)
    table.add_column("what")
    table.add_column("count", justify="right")
    table.add_row(
        "DPO rows train / eval", f"{export['dpo_train_rows']} / {export['dpo_eval_rows']}"
    )
    table.add_row("duplicates dropped", str(export["duplicates_dropped"]))
    table.add_row("KTO rows", str(export["kto_rows"]))
    table.add_row(
        "garbled (model / fallback / cached)",
        f"{garbling['model']} / {garbling['fallback']} / {garbling['cached']}",
    )
    table.add_row("shards (reused)", f"{report['shards']['total']} ({report['shards']['cached']})")
    for stage, seconds in report["timing_s"].items():
        table.add_row(f"time {stage}", f"{seconds:.1f} s")
    Console().print(table)
    Console().print(
        f"DPO files: {out}/dpo/train.jsonl, {out}/dpo/eval.jsonl; KTO: {out}/kto/train.jsonl"
    )


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


def print_report(report: dict[str, Any], out: str) -> None:
    """Print files, runs by class, pairs by rule and quarantine reasons."""
    table = Table(title=f"ingest -> {out}", show_header=True)
    table.add_column("what")
    table.add_column("count", justify="right")
    table.add_row(
        "files in / read / quarantined",
        f"{report['files_in']} / {report['files_read']} / {report['files_quarantined']}",
    )
    table.add_row("runs in / quarantined", f"{report['runs_in']} / {report['runs_quarantined']}")
    for run_class, count in report["runs_by_class"].items():
        table.add_row(f"  runs {run_class}", str(count))
    for rule, count in report["pairs_by_rule"].items():
        if count:
            table.add_row(f"  pairs {rule}", str(count))
    table.add_row("garble requests", str(report["garble_requests"]))
    for reason, count in report["quarantine_reasons"].items():
        table.add_row(f"  quarantined: {reason}", str(count))
    Console().print(table)
