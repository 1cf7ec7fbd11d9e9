"""The ``compare`` command: train each objective on one dataset and judge them on one yardstick."""

from __future__ import annotations

from typing import Annotated

import typer
from rich.console import Console
from rich.table import Table

from agir_retrain.flows.cli_app import ConfigOption, SetOption, app, friendly_errors, overrides
from agir_retrain.tasks.settings.compare import CompareConfig
from agir_retrain.tasks.settings.loader import field_description as describe
from agir_retrain.tasks.settings.loader import load_config


@app.command()
@friendly_errors
def compare(
    dataset: Annotated[str, typer.Argument(help=describe(CompareConfig, "dataset"))],
    objective: Annotated[
        list[str] | None,
        typer.Option("--objective", help=describe(CompareConfig, "objectives") + " Repeatable."),
    ] = None,
    base_model: Annotated[
        str | None, typer.Option(help=describe(CompareConfig, "base_model"))
    ] = None,
    out: Annotated[str | None, typer.Option(help=describe(CompareConfig, "out"))] = None,
    max_steps: Annotated[
        int | None, typer.Option(help=describe(CompareConfig, "max_steps"))
    ] = None,
    config: ConfigOption = None,
    set_: SetOption = None,
) -> None:
    """Train each objective, evaluate base and adapters on the same held-out tasks, one table."""
    loaded = load_config(
        CompareConfig,
        config,
        overrides(
            set_,
            dataset=dataset,
            objectives=objective or None,
            base_model=base_model,
            out=out,
            max_steps=max_steps,
        ),
    )
    from agir_retrain.flows.runtime import prefect_api

    with prefect_api():
        from agir_retrain.flows.compare import compare as compare_flow

        result = compare_flow(loaded.config)
    table = Table(title=f"compare -> {result.out}")
    for name in ("model", "pass@1", "freed share", "damage rate", "steps", "train time"):
        table.add_column(name, justify="left" if name == "model" else "right")
    from agir_retrain.tasks.evaluation.metrics import format_interval

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


def _register_config() -> None:
    """Let `agir-retrain config show compare` print these settings."""
    from agir_retrain.flows.cli_config import CONFIGS

    CONFIGS.setdefault("compare", CompareConfig)


_register_config()
