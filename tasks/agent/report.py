"""What a collection made: runs by class, attempts by outcome, space freed; rendered once."""

from __future__ import annotations

from collections import Counter
from collections.abc import Sequence
from dataclasses import asdict, dataclass, field

from agir_retrain.tasks.agent.outcomes import AttemptOutcome
from agir_retrain.tasks.agent.play import RunPlay

# The seed's classes of a copy agent's run (``runs/scoring.py`` gives the same from the file).
RUN_CLASSES = ("first_try", "mixed", "never_freed", "no_runnable")


@dataclass(frozen=True, slots=True, kw_only=True)
class RunSummary:
    """One played run: where it was written and what its copy agents did."""

    task_id: str
    run_index: int
    location: str | None  # None: not written (excluded)
    excluded: str | None
    strategy_failed: bool  # no strategy list could be parsed: the file has no copy agents
    copy_classes: tuple[str, ...]
    outcomes: tuple[AttemptOutcome, ...]
    freed_bytes: int


def copy_class(outcomes: Sequence[AttemptOutcome]) -> str:
    """The seed's class of one strategy's attempts (no inconsistencies arise when collecting)."""
    if AttemptOutcome.SUCCESS in outcomes:
        return "first_try" if outcomes[0] is AttemptOutcome.SUCCESS else "mixed"
    if any(o.ran for o in outcomes):
        return "never_freed"
    return "no_runnable"


def summarise_run(run: RunPlay, location: str | None) -> RunSummary:
    """Summarise a finished run."""
    classes = tuple(
        copy_class([a.outcome for a in run.attempts if a.strategy == index])
        for index in range(len(run.copies))
    )
    return RunSummary(
        task_id=run.task.task_id,
        run_index=run.run_index,
        location=location,
        excluded=run.excluded,
        strategy_failed=not run.copies and run.excluded is None,
        copy_classes=classes,
        outcomes=tuple(a.outcome for a in run.attempts),
        freed_bytes=sum(c.freed_bytes for c in run.copies),
    )


@dataclass(frozen=True, slots=True, kw_only=True)
class CollectReport:
    """A collection's counts (``collect_report.json``)."""

    model_name: str
    prompts: str
    tasks: int
    runs_written: int
    already_written: int  # skipped: written by an earlier, interrupted collection
    runs_excluded: int  # the sandbox could not run their programs
    runs_without_strategies: int
    runs_by_class: dict[str, int] = field(default_factory=dict)  # copy agents, the seed's runs
    attempts_by_outcome: dict[str, int] = field(default_factory=dict)
    bytes_freed: int = 0

    @classmethod
    def from_runs(
        cls,
        runs: Sequence[RunSummary],
        *,
        tasks: int,
        already_written: int,
        model_name: str,
        prompts: str,
    ) -> CollectReport:
        """Count what the played runs made."""
        classes = Counter(c for r in runs for c in r.copy_classes)
        outcomes = Counter(o.value for r in runs for o in r.outcomes)
        return cls(
            model_name=model_name,
            prompts=prompts,
            tasks=tasks,
            runs_written=sum(1 for r in runs if r.location is not None),
            already_written=already_written,
            runs_excluded=sum(1 for r in runs if r.excluded is not None),
            runs_without_strategies=sum(1 for r in runs if r.strategy_failed),
            runs_by_class={name: classes.get(name, 0) for name in RUN_CLASSES},
            attempts_by_outcome={o.value: outcomes.get(o.value, 0) for o in AttemptOutcome},
            bytes_freed=sum(r.freed_bytes for r in runs),
        )

    def to_dict(self) -> dict[str, object]:
        """The report as JSON-ready values."""
        return asdict(self)

    def rows(self) -> list[tuple[str, str]]:
        """The report as (what, count) rows: the terminal table and the Prefect artifact."""
        attempts = sum(self.attempts_by_outcome.values())
        rows = [
            ("model", self.model_name),
            ("tasks", str(self.tasks)),
            ("runs written (already there)", f"{self.runs_written} ({self.already_written})"),
            ("runs excluded (sandbox failed)", str(self.runs_excluded)),
            ("runs without a strategy list", str(self.runs_without_strategies)),
        ]
        rows += [(f"strategy runs: {k}", str(v)) for k, v in self.runs_by_class.items()]
        rows += [
            (f"attempts: {k}", f"{v} ({v / attempts:.0%})" if attempts else "0")
            for k, v in self.attempts_by_outcome.items()
        ]
        rows.append(("space freed", f"{self.bytes_freed / (1 << 20):.2f} MiB"))
        return rows
