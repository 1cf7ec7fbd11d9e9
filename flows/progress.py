"""Progress of a long stage: a bar on the terminal (counts and rate) and, inside a Prefect
run, a progress artifact that the UI shows filling up."""

from __future__ import annotations

import threading
from types import TracebackType
from uuid import UUID

from rich.console import Console
from rich.progress import (
    BarColumn,
    MofNCompleteColumn,
    Progress,
    TaskProgressColumn,
    TextColumn,
    TimeElapsedColumn,
    TimeRemainingColumn,
)

_stderr = Console(stderr=True)


class _Rate(TextColumn):
    """Items per second."""

    def __init__(self, unit: str) -> None:
        super().__init__("")
        self.unit = unit

    def render(self, task):  # type: ignore[override]
        from rich.text import Text

        speed = task.finished_speed or task.speed
        return Text(f"{speed:.1f} {self.unit}/s" if speed else f"- {self.unit}/s")


class StageProgress:
    """Count a stage's finished items on a terminal bar and a Prefect progress artifact.

    ``advance`` may be called from any thread. The artifact is made only inside a flow
    or task run (``key`` names it: lowercase letters, digits and dashes).
    """

    def __init__(self, description: str, total: int, key: str, unit: str = "items") -> None:
        self.description = description
        self.total = max(0, total)
        self.key = key
        self.done = 0
        self._lock = threading.Lock()
        self._bar = Progress(
            TextColumn("[progress.description]{task.description}"),
            BarColumn(),
            MofNCompleteColumn(),
            TaskProgressColumn(),
            _Rate(unit),
            TimeElapsedColumn(),
            TimeRemainingColumn(),
            console=_stderr,
            transient=True,
        )
        self._task = self._bar.add_task(description, total=self.total)
        self._artifact: UUID | None = None
        self._reported = -1.0

    def __enter__(self) -> StageProgress:
        self._artifact = _create_artifact(self.key, self.description)
        self._bar.start()
        return self

    def advance(self, count: int = 1) -> None:
        """Record ``count`` more items done."""
        with self._lock:
            self.done += count
            self._bar.advance(self._task, count)
            percent = 100.0 * self.done / self.total if self.total else 100.0
            # Whole percents only: a server round trip per episode would cost more than it shows.
            if self._artifact is not None and int(percent) > int(self._reported):
                self._reported = percent
                _update_artifact(self._artifact, percent)

    def __exit__(
        self,
        kind: type[BaseException] | None,
        error: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self._bar.stop()
        if self._artifact is not None and kind is None:
            _update_artifact(self._artifact, 100.0)


def _in_run() -> bool:
    from prefect.context import FlowRunContext, TaskRunContext

    return FlowRunContext.get() is not None or TaskRunContext.get() is not None


def _create_artifact(key: str, description: str) -> UUID | None:
    if not _in_run():
        return None
    from prefect.artifacts import create_progress_artifact

    return create_progress_artifact(0.0, key=key, description=description)


def _update_artifact(artifact: UUID, percent: float) -> None:
    from prefect.artifacts import update_progress_artifact

    update_progress_artifact(artifact, min(100.0, percent))
