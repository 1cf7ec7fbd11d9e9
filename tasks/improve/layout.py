"""Where each generation's outputs go, and which of its stages are finished.

    <out>/gen-0/collect/    runs the base model collected (runs/, attempts/, collect_report.json)
    <out>/gen-0/dataset/    the dataset built from them (report.json, sft/, dpo/, kto/, ...)
    <out>/gen-0/eval/       the base model on the held-out tasks
    <out>/gen-1/adapter/    trained on a window over the datasets of generations 0..0
    <out>/gen-1/eval/       the base and generations 1.. on the held-out tasks
    <out>/gen-1/collect/ ...

A stage is finished when its wall time is in the generation's ``timing.json``: it is
recorded after the stage's last file, atomically, so a run killed at any moment resumes at
the first stage whose time is missing (a stage killed after its output but before its time
runs again, which every stage allows: they overwrite their outputs atomically).
"""

from __future__ import annotations

import json  # not orjson: the GPU check imports this where orjson is absent
from dataclasses import dataclass

from agir_retrain.tasks.io import exists, join, read_bytes

HELDOUT_TASKS = "heldout_tasks.jsonl"
COLLECT_REPORT = "collect_report.json"
ADAPTER_METRICS = "metrics.json"
EVAL_REPORT = "eval.json"
COMPLETIONS = "completions.jsonl"
TIMING = "timing.json"  # wall seconds of each finished stage of the generation
STAGES = ("train", "sample", "evaluate", "collect", "build")


@dataclass(frozen=True, slots=True)
class GenerationPaths:
    """The folders of generation ``number`` under ``out``."""

    out: str
    number: int

    @property
    def root(self) -> str:
        """``<out>/gen-<number>``."""
        return join(self.out, f"gen-{self.number}")

    @property
    def label(self) -> str:
        """The model's label in evaluations: ``base`` for generation 0, else ``gen<number>``."""
        return "base" if self.number == 0 else f"gen{self.number}"

    @property
    def collect(self) -> str:
        """Runs this generation's model collected."""
        return join(self.root, "collect")

    @property
    def dataset(self) -> str:
        """The dataset built from those runs."""
        return join(self.root, "dataset")

    @property
    def adapter(self) -> str:
        """This generation's adapter (none for generation 0, the base)."""
        return join(self.root, "adapter")

    @property
    def eval(self) -> str:
        """This generation's evaluation on the held-out tasks."""
        return join(self.root, "eval")

    @property
    def timing(self) -> str:
        """The generation's stage timings (written as each stage finishes)."""
        return join(self.root, TIMING)

    def stage_seconds(self) -> dict[str, float]:
        """The wall seconds of each finished stage (empty before the first one)."""
        return dict(json.loads(read_bytes(self.timing))) if exists(self.timing) else {}

    def finished(self, stage: str) -> bool:
        """Whether ``stage`` (one of ``STAGES``) finished; generation 0 is never trained."""
        if stage not in STAGES:
            raise ValueError(f"unknown stage {stage!r}: one of {', '.join(STAGES)}")
        return (stage == "train" and self.number == 0) or stage in self.stage_seconds()
