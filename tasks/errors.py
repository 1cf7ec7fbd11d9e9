"""The project's exceptions. Each message says what went wrong, where, and what to do."""

from __future__ import annotations

from typing import TYPE_CHECKING

if TYPE_CHECKING:  # records import polars; the CLI imports errors and must start fast
    from agir_retrain.tasks.records import QuarantineReason


class AgirError(Exception):
    """A permanent error: retrying the same work gives the same failure."""


class RunFileError(AgirError):
    """A run file, or one run in it, cannot be read; it is quarantined, not fatal."""

    def __init__(
        self, source: str, reason: QuarantineReason, detail: str, run_id: str | None = None
    ) -> None:
        super().__init__(f"{source}{f' ({run_id})' if run_id else ''}: {reason.value}: {detail}")
        self.source = source
        self.reason = reason
        self.detail = detail
        self.run_id = run_id


class ConfigError(AgirError):
    """A setting is missing, malformed or contradicts another."""


class DatasetError(AgirError):
    """A preference dataset cannot be used for training."""


class ChatTemplateError(ConfigError):
    """A model's chat template is missing or cannot render a conversation."""


class SubmitError(AgirError):
    """A submitted job failed; carries the job's own exit status and log tail."""

    def __init__(self, cmd: str, returncode: int | None, log_tail: str) -> None:
        super().__init__(
            f"job {cmd!r} failed with exit status {returncode}; last lines of its log:\n{log_tail}"
        )
        self.cmd = cmd
        self.returncode = returncode
        self.log_tail = log_tail
