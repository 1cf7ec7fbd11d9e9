"""The synthetic corpus's ground truth, computed from the plans without the reader."""

from __future__ import annotations

from collections import Counter
from typing import TYPE_CHECKING, Any

from agir_retrain.tasks.run_ids import content_digest, make_run_id

if TYPE_CHECKING:
    from agir_retrain.tasks.synth.corpus import RunPlan


def file_truth(
    name: str, quarantine: str | None, plans: list[RunPlan], data: bytes
) -> dict[str, Any]:
    """What the reader must make of one file: quarantined or not, and each run's id, class and pairs."""
    stem, digest = name.removesuffix(".json"), content_digest(data)
    return {
        "name": name,
        "quarantine": quarantine,
        "runs": [
            {
                "run_id": make_run_id(stem, i, digest),
                "quarantine": plan.quirk,
                "class": None if plan.quirk else plan.run_class,
                "reason": None if plan.quirk else plan.reason,
                "pairs": {} if plan.quirk else dict(plan.pairs),
                "skipped_identical": 0 if plan.quirk else plan.skipped_identical,
            }
            for i, plan in enumerate(plans)
        ],
    }


def corpus_totals(files: list[dict[str, Any]]) -> dict[str, Any]:
    """The report counts the files' truths add up to (the keys of ``report.json``)."""
    runs = [run for f in files for run in f["runs"]]
    by_class = Counter(
        dict.fromkeys(("no_runnable", "never_freed", "mixed", "first_try", "inconsistent"), 0)
    )
    by_class.update(run["class"] for run in runs if run["class"])
    pairs: Counter[str] = Counter()
    for run in runs:
        pairs.update(run["pairs"])
    quarantine = Counter(f["quarantine"] for f in files if f["quarantine"])
    quarantine.update(run["quarantine"] for run in runs if run["quarantine"])
    read = [f for f in files if not f["quarantine"]]
    return {
        "files_in": len(files),
        "files_read": len(read),
        "files_quarantined": len(files) - len(read),
        "runs_in": len(runs),
        "runs_quarantined": sum(1 for run in runs if run["quarantine"]),
        "runs_by_class": dict(sorted(by_class.items())),
        "pairs_by_rule": dict(sorted(pairs.items())),
        "pairs_skipped_identical": sum(run["skipped_identical"] for run in runs),
        "quarantine_reasons": dict(sorted(quarantine.items())),
    }
