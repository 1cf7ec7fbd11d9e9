"""The ``compare`` command: train each objective on one dataset and judge them on one yardstick."""

from __future__ import annotations

from rich.console import Console
from rich.table import Table

from agir_retrain.flows.cli_commands import Flag, SettingsCommand, flow_runner
from agir_retrain.tasks.settings.compare import CompareConfig


def print_compare(_settings: CompareConfig, result) -> None:  # type: ignore[no-untyped-def]
    """The table of the comparison: quality with intervals, then the training cost."""
    from agir_retrain.tasks.evaluation.metrics import format_interval

    table = Table(title=f"compare -> {result.out}")
    for name in ("model", "pass@1", "freed share", "damage rate", "steps", "train time"):
        table.add_column(name, justify="left" if name == "model" else "right")
    for row in result.rows:
        table.add_row(
            row.model,
            *(
                format_interval(v.value, v.ci_low, v.ci_high)
                for v in (row.pass_at_1, row.freed_share, row.damage_rate)
            ),
            "" if row.train_steps is None else str(row.train_steps),
            "" if row.train_time_s is None else f"{row.train_time_s:.1f} s",
        )
    Console().print(table)


COMPARE = SettingsCommand(
    name="compare",
    settings=CompareConfig,
    flags=(
        Flag(key="dataset", argument=True), Flag(key="objectives", name="objective", repeat=True),
        Flag(key="base_model"), Flag(key="out"), Flag(key="max_steps"),
    ),
    run=flow_runner("agir_retrain.flows.compare:compare"),
    show=print_compare,
    help="Train each objective, evaluate base and adapters on the same held-out tasks, one table.",
)  # fmt: skip

COMMANDS = (COMPARE,)
