"""The one ``agir-retrain`` typer app and what its commands share: options, overrides, errors.

Each ``flows/cli_*.py`` module adds its commands to ``app``; ``flows/cli.py`` imports
them all and is the entry point.
"""

from __future__ import annotations

import functools
import logging
from collections.abc import Callable
from pathlib import Path
from typing import Annotated, Any, TypeVar

import typer
from rich.console import Console
from rich.logging import RichHandler

from agir_retrain.tasks.errors import AgirError

app = typer.Typer(
    help="Turn AGIR agent runs into DPO preference data and train a QLoRA DPO adapter on it.",
    no_args_is_help=True,
    pretty_exceptions_enable=False,
)
console = Console(stderr=True)

ConfigOption = Annotated[
    Path | None,
    typer.Option("--config", help="YAML file of settings (overridden by env and flags)."),
]
SetOption = Annotated[
    list[str] | None,
    typer.Option(
        "--set", help="Override any setting: --set read.max_file_bytes=1000000 (repeatable)."
    ),
]


F = TypeVar("F", bound=Callable[..., Any])


def friendly_errors(command: F) -> F:
    """Turn the project's errors and missing inputs into a one-line message and exit status 2."""

    @functools.wraps(command)
    def wrapper(*args: Any, **kwargs: Any) -> Any:
        try:
            return command(*args, **kwargs)
        except (AgirError, FileNotFoundError) as error:
            console.print(f"[red]error:[/red] {error}")
            raise typer.Exit(2) from error

    return wrapper  # type: ignore[return-value]


def overrides(pairs: list[str] | None, **flags: Any) -> dict[str, Any]:
    """Collect flags (None = not given) and ``--set key=value`` pairs into dotted overrides."""
    import yaml

    found = {key.replace("__", "."): value for key, value in flags.items()}
    for pair in pairs or []:
        key, sep, raw = pair.partition("=")
        if not sep:
            raise typer.BadParameter(f"--set takes key=value, got {pair!r}")
        found[key.strip()] = yaml.safe_load(raw) if raw else raw
    return found


def echo(line: str) -> None:
    """Print a line of a job's log as it is, on stderr."""
    console.print(line, markup=False, highlight=False)


@app.callback()
def _main(
    verbose: Annotated[bool, typer.Option("--verbose", "-v", help="Log at DEBUG level.")] = False,
) -> None:
    logging.basicConfig(
        level=logging.DEBUG if verbose else logging.INFO,
        format="%(message)s",
        handlers=[RichHandler(console=console, show_path=False)],
    )
