"""The audit report: what came in, what became of it, and proof that nothing was lost.

``files_in = files_read + files_quarantined`` and
``runs_in = sum(runs_by_class) + runs_quarantined`` always hold; ``check_balance``
says so or raises. Each registered run format may keep counts of its own
(``formats.base.FormatCounts``), which follow the shared keys in ``to_dict``.
"""

from __future__ import annotations

from collections import Counter
from dataclasses import dataclass, field
from typing import Any

from agir_retrain.tasks.records import PairRule, Run, RunClass
from agir_retrain.tasks.runs.fields import RunFileResult
from agir_retrain.tasks.runs.formats.base import FormatCounts
from agir_retrain.tasks.runs.formats.registry import run_formats
from agir_retrain.tasks.runs.pairing import RunPairs

_TOTALS = (
    "files_in", "files_read", "files_quarantined", "bytes_in", "runs_in", "runs_quarantined",
    "scored_records", "pairs_skipped_identical", "garble_requests",
)  # fmt: skip
_COUNTERS = (
    "runs_by_class",
    "unit_conventions",
    "file_schemas",
    "pairs_by_rule",
    "quarantine_reasons",
)


def _zeros(members: type) -> Counter[str]:
    return Counter(dict.fromkeys((m.value for m in members), 0))


def _format_counts() -> dict[str, FormatCounts]:
    """Empty counts for every registered format that keeps some, in registry order."""
    return {f.name: f.counts_type() for f in run_formats() if f.counts_type is not None}


@dataclass(slots=True)
class Report:
    """Counts for one shard or a whole corpus; reports of shards add up."""

    files_in: int = 0
    files_read: int = 0
    files_quarantined: int = 0
    bytes_in: int = 0
    runs_in: int = 0
    runs_quarantined: int = 0
    runs_by_class: Counter[str] = field(default_factory=lambda: _zeros(RunClass))
    runs_by_reason: dict[str, Counter[str]] = field(default_factory=dict)
    unit_conventions: Counter[str] = field(default_factory=Counter)
    file_schemas: Counter[str] = field(default_factory=Counter)
    scored_records: int = 0
    pairs_by_rule: Counter[str] = field(default_factory=lambda: _zeros(PairRule))
    pairs_skipped_identical: int = 0
    garble_requests: int = 0
    quarantine_reasons: Counter[str] = field(default_factory=Counter)
    # Each format's own counts, by format name (a post-shard step adds to its format's).
    format_counts: dict[str, FormatCounts] = field(default_factory=_format_counts)

    def add_file(self, result: RunFileResult) -> None:
        """Count one file's outcome: read or quarantined, and its runs found."""
        self.files_in += 1
        self.bytes_in += result.size_bytes
        if result.file_quarantined:
            self.files_quarantined += 1
        else:
            self.files_read += 1
        self.runs_in += result.runs_found
        counts = self.format_counts.get(result.file_format or "")
        if counts is not None:
            counts.add_file(result)
        for entry in result.quarantined:
            self.quarantine_reasons[entry.reason.value] += 1
            if entry.run_id is not None:
                self.runs_quarantined += 1

    def add_run(self, run: Run, scored: int, run_pairs: RunPairs) -> None:
        """Count one read run: its class and reason, its scored records and its pairs."""
        self.runs_by_class[run.run_class.value] += 1
        self.runs_by_reason.setdefault(run.run_class.value, Counter())[run.class_reason] += 1
        self.unit_conventions[run.unit_convention.value] += 1
        self.file_schemas[run.file_schema] += 1
        self.scored_records += scored
        self.pairs_skipped_identical += run_pairs.skipped_identical
        for pair in run_pairs.pairs:
            self.pairs_by_rule[pair.rule.value] += 1
            self.garble_requests += pair.rejected is None

    def counts_of(self, format_name: str) -> FormatCounts:
        """One format's own counts (``KeyError`` if it keeps none)."""
        return self.format_counts[format_name]

    def merge(self, other: Report) -> None:
        """Add another report's counts into this one."""
        for name in _TOTALS:
            setattr(self, name, getattr(self, name) + getattr(other, name))
        for name in _COUNTERS:
            getattr(self, name).update(getattr(other, name))
        for run_class, reasons in other.runs_by_reason.items():
            self.runs_by_reason.setdefault(run_class, Counter()).update(reasons)
        for name, counts in other.format_counts.items():
            self.format_counts.setdefault(name, type(counts)()).merge(counts)

    def check_balance(self) -> None:
        """Raise if any input is unaccounted for."""
        problems = []
        if self.files_in != self.files_read + self.files_quarantined:
            problems.append(
                f"files_in={self.files_in} != files_read={self.files_read} + "
                f"files_quarantined={self.files_quarantined}"
            )
        classified = sum(self.runs_by_class.values())
        if self.runs_in != classified + self.runs_quarantined:
            problems.append(
                f"runs_in={self.runs_in} != runs by class={classified} + "
                f"runs_quarantined={self.runs_quarantined}"
            )
        if problems:
            raise ValueError("report does not balance: " + "; ".join(problems))

    def to_dict(self) -> dict[str, Any]:
        """The report as plain JSON-ready values, keys in a stable order (formats' last)."""
        shared = {
            "files_in": self.files_in,
            "files_read": self.files_read,
            "files_quarantined": self.files_quarantined,
            "bytes_in": self.bytes_in,
            "runs_in": self.runs_in,
            "runs_quarantined": self.runs_quarantined,
            "runs_by_class": dict(sorted(self.runs_by_class.items())),
            "runs_by_reason": {
                k: dict(sorted(v.items())) for k, v in sorted(self.runs_by_reason.items())
            },
            "unit_conventions": dict(sorted(self.unit_conventions.items())),
            "file_schemas": dict(sorted(self.file_schemas.items())),
            "scored_records": self.scored_records,
            "pairs_by_rule": dict(sorted(self.pairs_by_rule.items())),
            "pairs_skipped_identical": self.pairs_skipped_identical,
            "garble_requests": self.garble_requests,
            "quarantine_reasons": dict(sorted(self.quarantine_reasons.items())),
        }
        for counts in self.format_counts.values():
            shared |= counts.to_dict()
        return shared

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> Report:
        """Rebuild a report from ``to_dict`` output."""
        report = cls()
        for name in _TOTALS:
            setattr(report, name, int(data.get(name, 0)))
        for name in _COUNTERS:
            getattr(report, name).update(data.get(name, {}))
        report.runs_by_reason = {k: Counter(v) for k, v in data["runs_by_reason"].items()}
        report.format_counts = {
            f.name: f.counts_type.from_dict(data)
            for f in run_formats()
            if f.counts_type is not None
        }
        return report
