"""A command of the CLI declared once: its settings model, which settings get flags, what it runs.

A flag is named by the setting it sets; its type and help come from the setting's
``Field`` (its only help text), so nothing is written twice. The command's settings are
loaded once (defaults < ``--config`` < ``AGIR_*`` < flags and ``--set``) and the typed
object is passed on; a flow runs on the configured (or a local) Prefect API.

    COLLECT = SettingsCommand(
        name="collect",
        settings=CollectConfig,
        flags=(Flag("inputs", argument=True), Flag("out"), Flag("agent.model", name="model")),
        run=flow_runner("agir_retrain.flows.collect:collect"),
        show=print_collect,
        help="Play the agent in the sandbox and write run files.",
    )

and one line in ``flows/cli.py``'s ``COMMANDS``.
"""

from __future__ import annotations

import importlib
import inspect
import types
import typing
from collections.abc import Callable
from dataclasses import dataclass
from typing import Annotated, Any, Literal

import typer
from pydantic import BaseModel

from agir_retrain.flows.cli_app import ConfigOption, SetOption, friendly_errors
from agir_retrain.tasks.settings.loader import (
    field_description,
    field_type,
    load_config,
    parse_set_pairs,
)


@dataclass(frozen=True, slots=True, kw_only=True)
class Flag:
    """A command-line flag (or argument) that sets one setting, by its dotted key.

    ``name``: the flag's name when it is not the setting's last part (``--processes`` for
    ``launch.num_processes``). ``argument``: positional (a list one takes many values).
    ``repeat``: a list option given once per value (``--adapter a --adapter b``). ``many``
    and ``help``: only for a flag whose meaning is more than its setting's (several values
    for one setting, which the command's ``adjust`` maps).
    """

    key: str
    name: str | None = None
    argument: bool = False
    repeat: bool = False
    many: bool = False
    metavar: str | None = None
    help: str | None = None

    @property
    def parameter(self) -> str:
        """The Python name of its parameter."""
        return (self.name or self.key.rsplit(".", 1)[-1]).replace("-", "_")

    @property
    def option(self) -> str:
        """The flag as typed: ``--base-model``."""
        return "--" + (self.name or self.key.rsplit(".", 1)[-1]).replace("_", "-")


@dataclass(frozen=True, slots=True, kw_only=True)
class SettingsCommand:
    """A command whose settings are one model: its flags, what it runs, how it shows the result.

    ``adjust`` may turn the flags' dotted values into others (``train``'s DATASET... names
    one dataset or several generations); ``check`` runs on the settings before ``run``
    (failing early, before any server starts).
    """

    name: str
    settings: type[BaseModel]
    flags: tuple[Flag, ...]
    run: Callable[[Any], Any]
    show: Callable[[Any, Any], None] | None = None
    help: str = ""
    adjust: Callable[[dict[str, Any]], dict[str, Any]] | None = None
    check: Callable[[Any], None] | None = None

    def overrides(self, given: dict[str, Any], pairs: list[str] | None) -> dict[str, Any]:
        """The dotted settings the command line gave: its flags (None: not given), then ``--set``."""
        values = {flag.key: given[flag.parameter] for flag in self.flags}
        values = {key: value for key, value in values.items() if value not in (None, [])}
        if self.adjust is not None:
            values = self.adjust(values)
        return values | parse_set_pairs(pairs or [])

    def load(
        self, config: Any = None, given: dict[str, Any] | None = None, pairs: Any = None
    ) -> Any:
        """The typed settings: defaults < config file < ``AGIR_*`` < flags and ``--set``."""
        return load_config(self.settings, config, self.overrides(given or {}, pairs)).config

    def __call__(self, settings: Any) -> Any:
        """Check, run and show, given settings (what the command does once they are loaded)."""
        if self.check is not None:
            self.check(settings)
        result = self.run(settings)
        if self.show is not None:
            self.show(settings, result)
        return result


def flow_runner(path: str, task_runner: Callable[[Any], Any] | None = None) -> Callable[[Any], Any]:
    """Run the Prefect flow at ``module:attribute`` with the settings, on a Prefect API.

    The flow's module is imported only when it runs (the CLI starts without Prefect);
    ``task_runner`` makes the flow's task runner from the settings (Ray, for instance).
    """

    def run(settings: Any) -> Any:
        from agir_retrain.flows.runtime import prefect_api

        with prefect_api():
            module, _, attribute = path.partition(":")
            flow = getattr(importlib.import_module(module), attribute)
            if task_runner is not None:
                flow = flow.with_options(task_runner=task_runner(settings))
            return flow(settings)

    return run


def register(app: typer.Typer, command: SettingsCommand | Callable[..., Any]) -> None:
    """Add a command to the app: a ``SettingsCommand``, or a plain function (its own flags)."""
    if not isinstance(command, SettingsCommand):
        app.command()(friendly_errors(command))
        return

    def invoke(config: Any = None, set_: Any = None, **given: Any) -> None:
        command(command.load(config, given, set_))

    invoke.__name__ = command.name
    invoke.__doc__ = command.help
    invoke.__signature__ = inspect.Signature(  # type: ignore[attr-defined]
        [_parameter(command.settings, flag) for flag in command.flags]
        + [
            inspect.Parameter("config", inspect.Parameter.KEYWORD_ONLY, default=None, annotation=ConfigOption),
            inspect.Parameter("set_", inspect.Parameter.KEYWORD_ONLY, default=None, annotation=SetOption),
        ]
    )  # fmt: skip
    app.command(command.name, help=command.help)(friendly_errors(invoke))


def _parameter(model: type[BaseModel], flag: Flag) -> inspect.Parameter:
    """The typer parameter of a flag: type and help from the setting's field."""
    kind = _cli_type(field_type(model, flag.key), flag)
    if flag.many:
        kind = list[kind]  # type: ignore[valid-type]
    help_text = flag.help or field_description(model, flag.key)
    if flag.repeat:
        help_text += " Repeatable."
    if flag.argument:
        info = typer.Argument(help=help_text, metavar=flag.metavar, show_default=False)
        return inspect.Parameter(
            flag.parameter,
            inspect.Parameter.POSITIONAL_OR_KEYWORD,
            annotation=Annotated[kind, info],
        )
    declaration = f"{flag.option}/--no-{flag.option[2:]}" if kind is bool else flag.option
    info = typer.Option(declaration, help=help_text, metavar=flag.metavar, show_default=False)
    return inspect.Parameter(
        flag.parameter, inspect.Parameter.KEYWORD_ONLY, default=None, annotation=Annotated[kind | None, info]
    )  # fmt: skip


def _cli_type(annotation: Any, flag: Flag) -> Any:
    """The flag's type: the setting's scalar or list type, with None (not given) removed.

    Choices (``Literal``) are taken as text and checked by the settings model, so a bad
    value is reported as every other bad setting is.
    """
    if typing.get_origin(annotation) is Annotated:  # PositiveInt and the like: the base type
        annotation = typing.get_args(annotation)[0]
    if typing.get_origin(annotation) in (typing.Union, types.UnionType):
        options = [arg for arg in typing.get_args(annotation) if arg is not type(None)]
        if len(options) == 1:
            return _cli_type(options[0], flag)
    if typing.get_origin(annotation) is Literal:
        return str
    if typing.get_origin(annotation) is list:
        return list[_cli_type(typing.get_args(annotation)[0], flag)]  # type: ignore[misc]
    if annotation in (str, int, float, bool):
        return annotation
    raise TypeError(f"{flag.key}: a setting of type {annotation!r} cannot be a flag")
