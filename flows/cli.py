"""The ``agir-retrain`` command line.

    agir-retrain synth --runs 200 --out corpus --seed 0
    agir-retrain ingest corpus --out out

Every setting can also come from ``--config FILE.yaml``, ``AGIR_*`` environment
variables, or ``--set key=value``; flags win over the environment, which wins over
the file. ``agir-retrain config show COMMAND`` prints the effective settings.

The commands are declared in ``flows/cli_*.py`` (a ``SettingsCommand`` each, or a plain
function) and listed here, in the order ``--help`` shows them: adding a command is one
entry in ``COMMANDS``.
"""

from __future__ import annotations

from agir_retrain.flows import (
    cli_collect,
    cli_compare,
    cli_data,
    cli_evaluate,
    cli_improve,
    cli_train,
)
from agir_retrain.flows.cli_app import app
from agir_retrain.flows.cli_commands import register
from agir_retrain.flows.cli_config import config_app

COMMANDS = (
    *cli_data.COMMANDS,
    *cli_collect.COMMANDS,
    *cli_train.COMMANDS,
    *cli_evaluate.COMMANDS,
    *cli_compare.COMMANDS,
    *cli_improve.COMMANDS,
)
for _command in COMMANDS:
    register(app, _command)
app.add_typer(config_app(COMMANDS), name="config")

__all__ = ["COMMANDS", "app", "main"]


def main() -> None:
    """Run the CLI."""
    app()


if __name__ == "__main__":
    main()
