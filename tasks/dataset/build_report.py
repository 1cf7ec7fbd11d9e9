"""The build-dataset report: ingest counts plus garbling, export, shards and timing, typed.

``report.json`` keeps its keys (the ingest report's, then ``garbling``, ``export``,
``shards``, ``timing_s``); the rows below are the one rendering every view uses.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass, field
from typing import Any

import orjson

from agir_retrain.tasks.dataset.build import GarbleStats
from agir_retrain.tasks.dataset.export import ExportReport
from agir_retrain.tasks.filenames import REPORT_FILE
from agir_retrain.tasks.io import join, read_bytes, write_json_atomic
from agir_retrain.tasks.rendering import Row
from agir_retrain.tasks.runs.report import Report


@dataclass(frozen=True, slots=True, kw_only=True)
class BuildReport:
    """What one build of the dataset read, made and took."""

    ingest: Report
    garbling: GarbleStats
    export: ExportReport
    shards_total: int
    shards_cached: int
    timing_s: dict[str, float] = field(default_factory=dict)

    def to_dict(self) -> dict[str, Any]:
        """The JSON-ready form written as ``report.json``."""
        return self.ingest.to_dict() | {
            "garbling": asdict(self.garbling),
            "export": asdict(self.export),
            "shards": {"total": self.shards_total, "cached": self.shards_cached},
            "timing_s": {stage: round(seconds, 2) for stage, seconds in self.timing_s.items()},
        }

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> BuildReport:
        """Rebuild a report from ``report.json``."""
        return cls(
            ingest=Report.from_dict(data),
            garbling=GarbleStats(**data["garbling"]),
            export=ExportReport(**data["export"]),
            shards_total=int(data["shards"]["total"]),
            shards_cached=int(data["shards"]["cached"]),
            timing_s={k: float(v) for k, v in data["timing_s"].items()},
        )


def write_build_report(out: str, report: BuildReport) -> BuildReport:
    """Check the counts balance, then write ``report.json`` atomically."""
    report.ingest.check_balance()
    write_json_atomic(join(out, REPORT_FILE), report.to_dict())
    return report


def read_build_report(folder: str) -> BuildReport:
    """Read a dataset folder's ``report.json``."""
    return BuildReport.from_dict(orjson.loads(read_bytes(join(folder, REPORT_FILE))))


def ingest_rows(report: Report) -> list[Row]:
    """Files, runs by class, pairs by rule, quarantine reasons: the ingest report's rows."""
    rows: list[Row] = [
        (
            "files in / read / quarantined",
            f"{report.files_in} / {report.files_read} / {report.files_quarantined}",
        ),
        ("runs in / quarantined", f"{report.runs_in} / {report.runs_quarantined}"),
    ]
    rows += [(f"runs {name}", str(n)) for name, n in sorted(report.runs_by_class.items())]
    rows += [(f"pairs {rule}", str(n)) for rule, n in sorted(report.pairs_by_rule.items()) if n]
    rows.append(("garble requests", str(report.garble_requests)))
    rows += [
        (f"quarantined: {reason}", str(n))
        for reason, n in sorted(report.quarantine_reasons.items())
    ]
    return rows


def build_rows(report: BuildReport) -> list[Row]:
    """The ingest rows plus DPO/KTO rows, garbling, shards and timing."""
    export, garbling = report.export, report.garbling
    rows = ingest_rows(report.ingest)
    rows += [
        ("DPO rows train / eval", f"{export.dpo_train_rows} / {export.dpo_eval_rows}"),
        ("duplicate rows dropped", str(export.duplicates_dropped)),
        ("KTO rows (desirable)", f"{export.kto_rows} ({export.kto_desirable})"),
        (
            "garbled: model / fallback / cached / redraws",
            f"{garbling.model} / {garbling.fallback} / {garbling.cached} / {garbling.redraws}",
        ),
        ("shards (reused)", f"{report.shards_total} ({report.shards_cached})"),
    ]
    rows += [(f"time {stage}", f"{seconds:.1f} s") for stage, seconds in report.timing_s.items()]
    return rows
