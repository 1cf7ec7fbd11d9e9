"""The one ``agir-retrain`` typer app and what its commands share: options, errors, output.

``flows/cli.py`` registers every command on ``app`` and is the entry point.
"""

from __future__ import annotations

import functools
import logging
import re
import signal
import threading
from collections.abc import Callable
from pathlib import Path
from typing import Annotated, Any, NoReturn, TypeVar

import click
import typer
from rich.console import Console
from rich.logging import RichHandler
from rich.markup import escape

from agir_retrain.tasks.errors import AgirError

app = typer.Typer(
    help="Turn AGIR agent runs into training data, train a QLoRA adapter on it, judge it in a sandbox.",
    no_args_is_help=True,
    pretty_exceptions_enable=False,
)
console = Console(stderr=True)
log = logging.getLogger(__name__)

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
    """End every failure in one readable line, the last thing printed.

    The project's errors and OS errors (a missing input, an ``--out`` that is a file, a
    folder where a file is expected) are the user's to fix: one line, exit status 2.
    Anything else (a bug, or a flow's failure, which Prefect has already logged with its
    traceback) ends with its root cause on the last line: exit status 2 when that is
    one of the above (a flow's task raised it), else 1. ``--verbose`` adds the traceback.
    """

    @functools.wraps(command)
    def wrapper(*args: Any, **kwargs: Any) -> Any:
        try:
            return command(*args, **kwargs)
        except (AgirError, OSError) as error:
            fail(error)
        except (typer.Exit, typer.Abort, click.ClickException):
            raise
        except KeyboardInterrupt as error:
            console.print("[red]error:[/red] interrupted")
            raise typer.Exit(130) from error
        except Exception as error:
            log.debug("traceback of the failure", exc_info=True)
            cause = root_cause(error)
            status = 2 if isinstance(cause, AgirError | OSError) else 1
            console.print(
                f"[red]error:[/red] {printable(summary(cause))}", soft_wrap=True, highlight=False
            )
            raise typer.Exit(status) from error

    return wrapper  # type: ignore[return-value]


def root_cause(error: BaseException) -> BaseException:
    """The exception a failure carries at its heart: Ray wraps a remote one in ``.cause``."""
    seen: set[int] = set()
    while id(error) not in seen:
        seen.add(id(error))
        inner = getattr(error, "cause", None)  # RayTaskError, ActorDiedError
        if not isinstance(inner, BaseException):
            break
        error = inner
    return error


_ANSI = re.compile(r"\x1b\[[0-9;]*[A-Za-z]")


def summary(error: BaseException) -> str:
    """One line for a failure: ``Type: message``, or the last line of a wrapped traceback.

    Ray's errors carry the remote traceback in their message, which ends with the
    exception raised there (``OSError: ...``); that line is the cause a person needs.
    """
    lines = [line for line in _ANSI.sub("", str(error)).splitlines() if line.strip()]
    if len(lines) > 1:
        return lines[-1].strip()
    return f"{type(error).__name__}: {lines[0] if lines else ''}".rstrip(": ")


def fail(error: BaseException, *, status: int = 2) -> NoReturn:
    """Print an error as the last line (escaped: names may hold markup or control codes)."""
    console.print(f"[red]error:[/red] {printable(str(error))}", soft_wrap=True)
    raise typer.Exit(status) from error


_CONTROL = re.compile(r"[\x00-\x08\x0b-\x1f\x7f-\x9f]")


def printable(text: str) -> str:
    """Text safe to print through rich: markup escaped, terminal control codes shown as ``\\xNN``."""
    return escape(_CONTROL.sub(lambda m: f"\\x{ord(m.group()):02x}", text))


def _terminated(signum: int, _frame: Any) -> None:
    raise SystemExit(128 + signum)


def echo(line: str) -> None:
    """Print a line of a job's log as it is, on stderr."""
    console.print(line, markup=False, highlight=False)


@app.callback()
def _main(
    verbose: Annotated[bool, typer.Option("--verbose", "-v", help="Log at DEBUG level.")] = False,
) -> None:
    if threading.current_thread() is threading.main_thread():
        # SIGTERM unwinds like an error: finally blocks remove temporary folders and stage.
        signal.signal(signal.SIGTERM, _terminated)
    logging.basicConfig(
        level=logging.DEBUG if verbose else logging.INFO,
        format="%(message)s",
        handlers=[RichHandler(console=console, show_path=False)],
    )
    if not verbose:  # one line per request to the Prefect API buries what matters
        logging.getLogger("httpx").setLevel(logging.WARNING)
