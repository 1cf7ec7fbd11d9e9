"""``agir-retrain config show``: each setting's effective value and where it came from.

No ``from __future__ import annotations`` here: typer reads ``config_show``'s annotations at
run time, and its help names the commands, known only when the group is made.
"""

import json
from collections.abc import Iterable
from typing import Annotated, Any

import typer

from agir_retrain.flows.cli_app import ConfigOption, SetOption, friendly_errors
from agir_retrain.flows.cli_commands import SettingsCommand
from agir_retrain.tasks.settings.loader import load_config, parse_set_pairs


def config_app(commands: Iterable[Any]) -> typer.Typer:
    """The ``config`` group, knowing the settings of every command that has a settings model."""
    configs = {c.name: c.settings for c in commands if isinstance(c, SettingsCommand)}
    group = typer.Typer(help="Inspect settings.", no_args_is_help=True)

    @group.command("show")
    @friendly_errors
    def config_show(
        command: Annotated[str, typer.Argument(help=f"One of: {', '.join(configs)}.")],
        config: ConfigOption = None,
        set_: SetOption = None,
    ) -> None:
        """Print a command's effective settings, one a line, and where each came from.

        Sources: default, file:<path>, env:<NAME> or flag (a default derived from another
        setting, such as build.out from out, shows as default).
        """
        from agir_retrain.tasks.settings.loader import leaf_keys, masked, value_at

        if command not in configs:
            raise typer.BadParameter(f"{command!r}: choose one of {', '.join(configs)}")
        model = configs[command]
        loaded = load_config(model, config, parse_set_pairs(set_ or []))
        width = max(map(len, leaf_keys(model)))
        for key in leaf_keys(model):
            value = json.dumps(masked(value_at(loaded.config, key)), default=str)
            typer.echo(f"{key:<{width}} = {value}  # {loaded.sources.get(key, 'default')}")

    return group
