"""``agir-retrain improve``: generations of collect -> dataset -> train -> evaluate.

agir-retrain improve --base-model builtin:smollm2-135m --generations 2 --start reference
"""

from __future__ import annotations

from typing import Annotated

import typer

from agir_retrain.flows.cli_app import ConfigOption, SetOption, app, friendly_errors, overrides
from agir_retrain.tasks.settings.improve import ImproveConfig
from agir_retrain.tasks.settings.loader import field_description as describe
from agir_retrain.tasks.settings.loader import load_config


def _help(key: str) -> str:
    return describe(ImproveConfig, key)


@app.command()
@friendly_errors
def improve(
    base_model: Annotated[str | None, typer.Option(help=_help("base_model"))] = None,
    generations: Annotated[int | None, typer.Option(help=_help("generations"))] = None,
    start: Annotated[str | None, typer.Option(help=_help("start"))] = None,
    objective: Annotated[
        str | None, typer.Option(help=describe(ImproveConfig, "train.objective"))
    ] = None,
    out: Annotated[str | None, typer.Option(help=_help("out"))] = None,
    config: ConfigOption = None,
    set_: SetOption = None,
) -> None:
    """Improve the agent over generations: collect, build, train, evaluate, repeated."""
    loaded = load_config(
        ImproveConfig,
        config,
        overrides(
            set_,
            base_model=base_model,
            generations=generations,
            start=start,
            train__objective=objective,
            out=out,
        ),
    )
    from agir_retrain.flows.cli_output import print_cells
    from agir_retrain.flows.runtime import prefect_api
    from agir_retrain.tasks.improve.report import table_cells

    with prefect_api():
        from agir_retrain.flows.improve import improve as improve_flow

        result = improve_flow(loaded.config)
    facts, yardstick = table_cells(result.report)
    print_cells(facts, title=f"improve -> {result.out}")
    print_cells(yardstick, title="held-out tasks (intervals below each figure)", split=True)
    if result.report.stopped_early:
        typer.echo(f"stopped early: {result.report.stopped_early}")


def _register_config() -> None:
    """Let `agir-retrain config show improve` print these settings."""
    from agir_retrain.flows.cli_config import CONFIGS

    CONFIGS.setdefault("improve", ImproveConfig)


_register_config()
