"""``agir-retrain evaluate``: run models' programs in the sandbox and report pass@1, freed share
and damage with intervals.

    agir-retrain evaluate --tasks tasks.jsonl --completions completions.jsonl --out eval
    agir-retrain evaluate --dataset dataset --base-model builtin:tiny --adapter adapter --out eval

With ``--completions`` no model is loaded (torch is never imported).
"""

from __future__ import annotations

from rich.console import Console
from rich.table import Table

from agir_retrain.flows.cli_commands import Flag, SettingsCommand, flow_runner
from agir_retrain.tasks.settings.evaluation import EvaluateConfig


def check_inputs(settings: EvaluateConfig) -> None:
    """Read the tasks, scenarios and completions now (``evaluation/stages.check_inputs``)."""
    from agir_retrain.tasks.evaluation.stages import check_inputs as check

    check(settings)


EVALUATE = SettingsCommand(
    name="evaluate",
    settings=EvaluateConfig,
    flags=(
        Flag(key="tasks"), Flag(key="dataset"), Flag(key="completions"), Flag(key="base_model"),
        Flag(key="adapters", name="adapter", repeat=True), Flag(key="out"), Flag(key="samples"),
        Flag(key="temperature"), Flag(key="max_new_tokens"), Flag(key="seed"),
        Flag(key="scenarios", name="scenario", repeat=True), Flag(key="env_blocks"),
        Flag(key="max_tasks"), Flag(key="workers"), Flag(key="environment.limits.wall_s"),
        Flag(key="ray_address"),
    ),
    # A bad line or scenario fails here, before any server starts.
    check=check_inputs,
    run=flow_runner("agir_retrain.flows.evaluate:evaluate"),
    show=lambda _settings, result: print_evaluation(result.report, result.out),
    help="Evaluate models on sandboxed disk-cleanup tasks: episodes.parquet, eval.json, a table.",
)  # fmt: skip


def print_evaluation(report, out: str) -> None:  # type: ignore[no-untyped-def]
    """Print the models and differences tables (the same cells as eval.md)."""
    from agir_retrain.tasks.evaluation.metrics import table_cells

    for title, cells in zip(("evaluation", "paired differences"), table_cells(report), strict=True):
        header, *rows = cells
        if not rows:
            continue
        table = Table(title=f"{title} -> {out}" if title == "evaluation" else title)
        for index, name in enumerate(header):
            table.add_column(name, justify="left" if index == 0 else "right")
        for row in rows:
            table.add_row(*(cell.replace(" [", "\n[") for cell in row))  # interval below
        Console().print(table)
    Console().print(
        f"{out}/episodes.parquet, {out}/eval.json, {out}/eval.md, {out}/eval.png "
        f"(means over tasks; {round(100 * report.confidence)}% bootstrap intervals)"
    )


COMMANDS = (EVALUATE,)
