"""The ``agir-retrain`` command line.

    agir-retrain synth --runs 200 --out corpus --seed 0
    agir-retrain ingest corpus --out out

Every setting can also come from ``--config FILE.yaml``, ``AGIR_*`` environment
variables, or ``--set key=value``; flags win over the environment, which wins over
the file. ``agir-retrain config show COMMAND`` prints the effective settings.

The commands live in ``flows/cli_*.py``, each adding its own to the one ``app``;
importing a module here is what registers its commands.
"""

from __future__ import annotations

import importlib

from agir_retrain.flows.cli_app import app

# Each module adds its commands to ``app`` when imported; --help lists them in this order.
COMMAND_MODULES = (
    "cli_data",
    "cli_collect",
    "cli_train",
    "cli_evaluate",
    "cli_compare",
    "cli_improve",
    "cli_config",
)
for _name in COMMAND_MODULES:
    importlib.import_module(f"agir_retrain.flows.{_name}")

__all__ = ["COMMAND_MODULES", "app", "main"]


def main() -> None:
    """Run the CLI."""
    app()


if __name__ == "__main__":
    main()
