"""``agir-retrain evaluate``: run models' programs in the sandbox and report pass@1, freed share
and damage with intervals.

    agir-retrain evaluate --tasks tasks.jsonl --completions completions.jsonl --out eval
    agir-retrain evaluate --dataset dataset --base-model builtin:tiny --adapter adapter --out eval

With ``--completions`` no model is loaded (torch is never imported).
"""

from __future__ import annotations

from typing import Annotated

import typer
from rich.console import Console
from rich.table import Table

from agir_retrain.flows.cli_app import ConfigOption, SetOption, app, friendly_errors, overrides
from agir_retrain.tasks.settings.evaluation import EvaluateConfig
from agir_retrain.tasks.settings.loader import field_description as describe
from agir_retrain.tasks.settings.loader import load_config


def _help(key: str) -> str:
    return describe(EvaluateConfig, key)


@app.command()
@friendly_errors
def evaluate(
    tasks: Annotated[str | None, typer.Option(help=_help("tasks"))] = None,
    dataset: Annotated[str | None, typer.Option(help=_help("dataset"))] = None,
    completions: Annotated[str | None, typer.Option(help=_help("completions"))] = None,
    base_model: Annotated[str | None, typer.Option(help=_help("base_model"))] = None,
    adapter: Annotated[
        list[str] | None, typer.Option("--adapter", help=_help("adapters") + " Repeatable.")
    ] = None,
    out: Annotated[str | None, typer.Option(help=_help("out"))] = None,
    samples: Annotated[int | None, typer.Option(help=_help("samples"))] = None,
    temperature: Annotated[float | None, typer.Option(help=_help("temperature"))] = None,
    max_new_tokens: Annotated[int | None, typer.Option(help=_help("max_new_tokens"))] = None,
    seed: Annotated[int | None, typer.Option(help=_help("seed"))] = None,
    scenario: Annotated[
        list[str] | None, typer.Option("--scenario", help=_help("scenarios") + " Repeatable.")
    ] = None,
    env_blocks: Annotated[str | None, typer.Option(help=_help("env_blocks"))] = None,
    max_tasks: Annotated[int | None, typer.Option(help=_help("max_tasks"))] = None,
    workers: Annotated[int | None, typer.Option(help=_help("workers"))] = None,
    wall_s: Annotated[
        float | None, typer.Option(help=describe(EvaluateConfig, "environment.limits.wall_s"))
    ] = None,
    ray_address: Annotated[str | None, typer.Option(help=_help("ray_address"))] = None,
    config: ConfigOption = None,
    set_: SetOption = None,
) -> None:
    """Evaluate models on sandboxed disk-cleanup tasks: episodes.parquet, eval.json, a table."""
    loaded = load_config(
        EvaluateConfig,
        config,
        overrides(
            set_,
            tasks=tasks,
            dataset=dataset,
            completions=completions,
            base_model=base_model,
            adapters=adapter or None,
            out=out,
            samples=samples,
            temperature=temperature,
            max_new_tokens=max_new_tokens,
            seed=seed,
            scenarios=scenario or None,
            env_blocks=env_blocks,
            max_tasks=max_tasks,
            workers=workers,
            environment__limits__wall_s=wall_s,
            ray_address=ray_address,
        ),
    )
    from agir_retrain.tasks.evaluation.stages import check_inputs

    check_inputs(loaded.config)  # a bad line or scenario fails here, before any server starts
    result = run_evaluate(loaded.config)
    print_evaluation(result.report, result.out)


def run_evaluate(settings: EvaluateConfig):  # type: ignore[no-untyped-def]
    """Run the evaluate flow on the configured (or a local) Prefect API."""
    from agir_retrain.flows.runtime import prefect_api

    with prefect_api():
        from agir_retrain.flows.evaluate import evaluate as evaluate_flow

        return evaluate_flow(settings)


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


def _register_config() -> None:
    """Let `agir-retrain config show evaluate` print these settings."""
    from agir_retrain.flows.cli_config import CONFIGS

    CONFIGS.setdefault("evaluate", EvaluateConfig)


_register_config()
