"""Generations: several datasets (one per generation of the agent), a window over them, lineage.

The agent improves in generations: the model with adapter N collects runs, which train
adapter N+1. ``GenerationsSettings`` says which datasets to train a fresh adapter on;
``Producer`` (a dataset's ``generation.json``) says which model collected a dataset's runs
and how that model scored; ``Lineage`` is what a window trained on, carried in the
resolved config to every backend and written beside the adapter (``lineage.json``).
"""

from __future__ import annotations

import re
from typing import Literal

from pydantic import Field, PositiveInt, field_validator

from agir_retrain.tasks.settings.base import Section

WINDOW_PATTERN = re.compile(r"^(all|last:[1-9][0-9]*|best:[1-9][0-9]*)$")
RankBy = Literal["pass_at_1", "mean_freed_share"]


class GenerationsSettings(Section):
    """Which generations' datasets a fresh adapter trains on (always on the base, never stacked)."""

    datasets: list[str] = Field(
        default_factory=list,
        description="Dataset folders the dataset flow wrote, one per generation, oldest first; "
        "empty: train on `dataset` alone. Their files are combined (exact duplicate rows kept "
        "once, eval rows that are training rows dropped) into one dataset under the cache folder.",
    )
    window: str = Field(
        "all",
        description="Which of them: all, last:K (the K newest), or best:K (the K whose producing "
        "model scored best in its recorded evaluation, generation.json; ties go to the newer).",
    )
    rank_by: RankBy = Field(
        "pass_at_1", description="The recorded figure best:K ranks by (higher is better)."
    )

    @field_validator("window")
    @classmethod
    def _window(cls, value: str) -> str:
        if not WINDOW_PATTERN.match(value):
            raise ValueError(f"window={value!r}: use all, last:K or best:K (K a positive integer)")
        return value


class RecordedEvaluation(Section):
    """How the model that collected a dataset's runs scored (its ``eval.json`` entry)."""

    source: str = Field(description="The eval.json the figures were read from.")
    model: str = Field(description="The model's name in that eval.json.")
    pass_at_1: float = Field(description="pass@1 of the model.")
    mean_freed_share: float = Field(description="Mean share of the junk freed.")
    tasks: int = Field(ge=0, description="Tasks it was evaluated on.")


class Producer(Section):
    """``generation.json`` of a dataset: the model that collected its runs, and its record."""

    format: Literal[1] = 1
    adapter: str | None = Field(
        None, description="The adapter folder that collected the runs; None: the base model."
    )
    adapter_sha256: str | None = Field(None, description="sha256 of its adapter weights.")
    evaluation: RecordedEvaluation | None = Field(
        None, description="The producing model's recorded evaluation, if any."
    )
    lineage: Lineage | None = Field(
        None, description="The lineage of the producing adapter (what it was trained on)."
    )


class GenerationRecord(Section):
    """One generation's dataset as a window saw it."""

    generation: PositiveInt = Field(description="1 for the oldest dataset given, then 2, ...")
    dataset: str = Field(description="The dataset folder as given.")
    dataset_sha256: str = Field(description="sha256 over its training files (name and content).")
    producer: Producer | None = Field(
        None, description="Its generation.json; None when the dataset records none."
    )
    selected: bool = Field(description="Whether the window took it.")
    rows: dict[str, int] = Field(
        default_factory=dict,
        description="Rows taken from each of its files (after duplicates were dropped).",
    )


class Lineage(Section):
    """What a window trained on: every generation given, which were taken, and what was dropped."""

    window: str
    rank_by: RankBy
    dataset: str = Field(description="The combined dataset folder the adapter trained on.")
    generations: list[GenerationRecord]
    duplicate_rows_dropped: int = Field(ge=0)
    eval_rows_in_train_dropped: int = Field(ge=0)


Producer.model_rebuild()
