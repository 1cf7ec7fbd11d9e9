"""A code attempt's outcome, in the order the agent checks it, and the error it reports back.

| outcome | when |
|---|---|
| ``ast_fail`` | no program in the reply, or ``ast.parse`` fails |
| ``compile_fail`` | ``compile()`` fails (``return`` outside a function, ...) |
| ``container_fail`` | the program exited non-zero, was stopped by a limit, or printed nothing |
| ``deletion_fail`` | it ran, but freed nothing, or damaged a protected file (never a success) |
| ``success`` | it ran, printed, freed junk, damaged nothing |

``compile()`` only turns the text into a code object; nothing is run outside the sandbox.
"""

from __future__ import annotations

import ast
from dataclasses import dataclass
from enum import StrEnum

from agir_retrain.tasks import agir_prompts
from agir_retrain.tasks.environment.contract import Episode
from agir_retrain.tasks.environment.episode import extract_program

ERROR_TAIL_CHARS = 1200  # of stderr, quoted back to the model (the end holds the exception)
MAX_DAMAGE_NAMED = 5


class AttemptOutcome(StrEnum):
    """What the agent tags a code attempt with (``genned_strat_code(<outcome>)``)."""

    AST_FAIL = "ast_fail"
    COMPILE_FAIL = "compile_fail"
    CONTAINER_FAIL = "container_fail"
    DELETION_FAIL = "deletion_fail"
    SUCCESS = "success"

    @property
    def ran(self) -> bool:
        """Whether the program ran to a clean exit (the seed's "runnable")."""
        return self in (AttemptOutcome.DELETION_FAIL, AttemptOutcome.SUCCESS)


@dataclass(frozen=True, slots=True, kw_only=True)
class CheckedReply:
    """A code reply before it runs: its program, or why it cannot run."""

    program: str | None
    failed: AttemptOutcome | None  # ast_fail or compile_fail; None when it can run
    error: str  # what the agent reports back for a failure ("" otherwise)


@dataclass(frozen=True, slots=True, kw_only=True)
class Judged:
    """An attempt's outcome, the bytes it freed (net of what it left), and the error text."""

    outcome: AttemptOutcome
    freed_bytes: int
    error: str


def check_reply(reply: str) -> CheckedReply:
    """Find the reply's program and check that it parses and compiles (never runs it)."""
    program = extract_program(reply)
    if program is None:
        return CheckedReply(
            program=None,
            failed=AttemptOutcome.AST_FAIL,
            error="Syntax Error: no ```python code block with a program was found",
        )
    try:
        ast.parse(program)
    except (SyntaxError, ValueError, RecursionError, MemoryError) as exc:
        return CheckedReply(program=program, failed=AttemptOutcome.AST_FAIL, error=_syntax(exc))
    try:
        compile(program, "<code>", "exec", dont_inherit=True)
    except (SyntaxError, ValueError, RecursionError, MemoryError) as exc:
        return CheckedReply(program=program, failed=AttemptOutcome.COMPILE_FAIL, error=_syntax(exc))
    return CheckedReply(program=program, failed=None, error="")


def judge_episode(episode: Episode) -> Judged:
    """The outcome the agent gives an episode, with the error it would quote back."""
    freed = max(0, episode.junk_bytes_freed - episode.new_bytes)
    if episode.exit_code != 0 or episode.stopped_by is not None:
        return Judged(outcome=AttemptOutcome.CONTAINER_FAIL, freed_bytes=0, error=_failure(episode))
    if not episode.stdout_tail.strip():
        return Judged(
            outcome=AttemptOutcome.CONTAINER_FAIL,
            freed_bytes=0,
            error="The code ran but printed nothing to stdout.",
        )
    if episode.protected_damaged:
        named = ", ".join(episode.protected_damaged[:MAX_DAMAGE_NAMED])
        more = len(episode.protected_damaged) - MAX_DAMAGE_NAMED
        extra = f" and {more} more" if more > 0 else ""
        return Judged(
            outcome=AttemptOutcome.DELETION_FAIL,
            freed_bytes=0,
            error=f"The code deleted or changed files that must be kept: {named}{extra}. "
            "Only remove what the task names.",
        )
    if freed <= 0:
        return Judged(
            outcome=AttemptOutcome.DELETION_FAIL, freed_bytes=0, error=agir_prompts.NOTHING_FREED
        )
    return Judged(outcome=AttemptOutcome.SUCCESS, freed_bytes=freed, error="")


def _syntax(exc: BaseException) -> str:
    if isinstance(exc, SyntaxError):
        return f"Syntax Error: {exc.msg} (line {exc.lineno})"
    return f"Syntax Error: {type(exc).__name__}"


def _failure(episode: Episode) -> str:
    if episode.stopped_by is not None:
        head = f"The code was stopped: it exceeded the {episode.stopped_by} limit."
    else:
        head = f"The code exited with status {episode.exit_code}."
    tail = episode.stderr_tail[-ERROR_TAIL_CHARS:].strip()
    return f"{head}\n{tail}" if tail else head
