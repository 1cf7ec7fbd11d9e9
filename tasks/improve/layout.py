"""Where each generation's outputs go, and which of its stages are finished.

    <out>/gen-0/collect/    runs the base model collected (runs/, attempts/, collect_report.json)
    <out>/gen-0/dataset/    the dataset built from them (report.json, sft/, dpo/, kto/, ...)
    <out>/gen-0/eval/       the base model on the held-out tasks
    <out>/gen-1/adapter/    trained on a window over the datasets of generations 0..0
    <out>/gen-1/eval/       the base and generations 1.. on the held-out tasks
    <out>/gen-1/collect/ ...

A stage is finished when its last file exists (each stage writes it last, atomically), so
a killed run resumes at the first unfinished stage.
"""

from __future__ import annotations

from dataclasses import dataclass

from agir_retrain.tasks.io import exists, join

HELDOUT_TASKS = "heldout_tasks.jsonl"
COLLECT_REPORT = "collect_report.json"
DATASET_REPORT = "report.json"
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

    def collected(self) -> bool:
        """Whether collecting finished."""
        return exists(join(self.collect, COLLECT_REPORT))

    def built(self) -> bool:
        """Whether the dataset was built."""
        return exists(join(self.dataset, DATASET_REPORT))

    def trained(self) -> bool:
        """Whether the adapter was trained (generation 0 never is: it is the base)."""
        return self.number == 0 or exists(join(self.adapter, ADAPTER_METRICS))

    def evaluated(self) -> bool:
        """Whether the evaluation finished."""
        return exists(join(self.eval, EVAL_REPORT))
