"""``agir-retrain collect``: a model plays the agent's loop in the sandbox and writes v4 runs.

agir-retrain collect --generated 64 --strategies given --runs-per-task 4 --out gen0
agir-retrain collect --scenario heavy-mix --base-model model.gguf --adapter gen1 --out gen1
"""

from __future__ import annotations

from typing import Annotated

import typer

from agir_retrain.flows.cli_app import ConfigOption, SetOption, app, friendly_errors, overrides
from agir_retrain.tasks.settings.collect import CollectConfig
from agir_retrain.tasks.settings.loader import field_description as describe
from agir_retrain.tasks.settings.loader import load_config


def _help(key: str) -> str:
    return describe(CollectConfig, key)


@app.command()
@friendly_errors
def collect(
    scenario: Annotated[
        list[str] | None, typer.Option("--scenario", help=_help("scenarios") + " Repeatable.")
    ] = None,
    generated: Annotated[int | None, typer.Option(help=_help("generated"))] = None,
    first_seed: Annotated[int | None, typer.Option(help=_help("first_seed"))] = None,
    strategies: Annotated[str | None, typer.Option(help=_help("strategies"))] = None,
    runs_per_task: Annotated[int | None, typer.Option(help=_help("runs_per_task"))] = None,
    base_model: Annotated[str | None, typer.Option(help=_help("base_model"))] = None,
    adapter: Annotated[str | None, typer.Option(help=_help("adapter"))] = None,
    prompts: Annotated[str | None, typer.Option(help=_help("prompts"))] = None,
    out: Annotated[str | None, typer.Option(help=_help("out"))] = None,
    seed: Annotated[int | None, typer.Option(help=_help("seed"))] = None,
    config: ConfigOption = None,
    set_: SetOption = None,
) -> None:
    """Play the agent's loop with a model on scenarios; write AGIR v4 run files."""
    loaded = load_config(
        CollectConfig,
        config,
        overrides(
            set_,
            scenarios=scenario or None,
            generated=generated,
            first_seed=first_seed,
            strategies=strategies,
            runs_per_task=runs_per_task,
            base_model=base_model,
            adapter=adapter,
            prompts=prompts,
            out=out,
            seed=seed,
        ),
    )
    from agir_retrain.flows.cli_output import print_rows
    from agir_retrain.flows.runtime import prefect_api
    from agir_retrain.tasks.agent.collect import collect_tasks

    collect_tasks(loaded.config)  # a bad scenario or setting fails here, before any server starts
    with prefect_api():
        from agir_retrain.flows.collect import collect_flow

        result = collect_flow(loaded.config)
    print_rows(result.report.rows(), title=f"collect -> {result.runs}", value_header="count")


def _register_config() -> None:
    """Let `agir-retrain config show collect` print these settings."""
    from agir_retrain.flows.cli_config import CONFIGS

    CONFIGS.setdefault("collect", CollectConfig)


_register_config()
