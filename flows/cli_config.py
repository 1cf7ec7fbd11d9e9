"""``agir-retrain config show``: each setting's effective value and where it came from."""

from __future__ import annotations

import json
from typing import Annotated

import typer

from agir_retrain.flows.cli_app import ConfigOption, SetOption, app, friendly_errors, overrides
from agir_retrain.tasks.settings.loader import load_config
from agir_retrain.tasks.settings.models import (
    BuildDatasetConfig,
    IngestConfig,
    RetrainConfig,
    TrainConfig,
)

config_app = typer.Typer(help="Inspect settings.", no_args_is_help=True)
app.add_typer(config_app, name="config")
CONFIGS = {
    "ingest": IngestConfig,
    "dataset": BuildDatasetConfig,
    "train": TrainConfig,
    "retrain": RetrainConfig,
}


@config_app.command("show")
@friendly_errors
def config_show(
    command: Annotated[str, typer.Argument(help=f"One of: {', '.join(CONFIGS)}.")],
    config: ConfigOption = None,
    set_: SetOption = None,
) -> None:
    """Print a command's effective settings, one a line, and where each came from.

    Sources: default, file:<path>, env:<NAME> or flag (a default derived from another
    setting, such as build.out from out, shows as default).
    """
    from agir_retrain.tasks.settings.loader import leaf_keys, masked, value_at

    if command not in CONFIGS:
        raise typer.BadParameter(f"{command!r}: choose one of {', '.join(CONFIGS)}")
    model = CONFIGS[command]
    loaded = load_config(model, config, overrides(set_))
    width = max(map(len, leaf_keys(model)))
    for key in leaf_keys(model):
        value = json.dumps(masked(value_at(loaded.config, key)), default=str)
        typer.echo(f"{key:<{width}} = {value}  # {loaded.sources.get(key, 'default')}")
