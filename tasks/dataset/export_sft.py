"""Export the SFT rows: the successful records of table 1, split by run as the DPO rows are.

    sft/train.jsonl, sft/eval.jsonl   {"prompt": [...], "completion": [{"role": "assistant", ...}], ...}

A row is a record that freed space: (code prompt -> the code that freed it) and (strategy
prompt -> the strategy that freed it), from consistent runs only. TRL's prompt-completion
format, so the SFT trainer puts the loss on the completion (the assistant turn) alone.
"""

from __future__ import annotations

import polars as pl

from agir_retrain.tasks.dataset.export import (
    ExportReport,
    assistant_column,
    prompt_column,
    split_of,
    write_ndjson,
)
from agir_retrain.tasks.filenames import COMPLETION_EVAL, COMPLETION_TRAIN, RUNS_FILE, SCORED_FILE
from agir_retrain.tasks.io import join
from agir_retrain.tasks.records import RunClass
from agir_retrain.tasks.settings.models import ExportSettings

SFT_COLUMNS = ("prompt", "completion", "score", "prompt_kind", "response_kind", "run_id", "source")


def export_sft(folder: str, out: str, settings: ExportSettings, report: ExportReport) -> None:
    """Write ``sft/train.jsonl`` and ``sft/eval.jsonl`` from the tables in ``folder``."""
    runs = pl.scan_parquet(join(folder, RUNS_FILE)).select(
        "run_id",
        "source",
        pl.col("run_class").cast(pl.String),
        "conversation",
        "strategy_turns",
        "code_turns",
        "code_prompt_start",
        "env_getter_prompt",
    )
    rows = (
        pl.scan_parquet(join(folder, SCORED_FILE))
        .filter(pl.col("score_bytes") > 0)
        .join(runs, on="run_id", how="left", maintain_order="left")
        .filter(pl.col("run_class") != RunClass.INCONSISTENT.value)
        .select(
            prompt_column(),
            assistant_column("response").alias("completion"),
            pl.col("score_bytes").alias("score"),
            pl.col("prompt_kind", "response_kind").cast(pl.String),
            "run_id",
            "source",
        )
        .filter(pl.col("prompt").list.len() > 0)
        .unique(subset=["prompt", "completion"], keep="first", maintain_order=True)
        .collect()
    )
    run_ids = rows.get_column("run_id").unique(maintain_order=True).to_list()
    splits = pl.DataFrame(
        {
            "run_id": run_ids,
            "split": [split_of(r, settings.split_seed, settings.eval_share) for r in run_ids],
        },
        schema={"run_id": pl.String, "split": pl.String},
    )
    rows = rows.join(splits, on="run_id", how="left", maintain_order="left")
    for split, path in (("train", COMPLETION_TRAIN), ("eval", COMPLETION_EVAL)):
        part = rows.filter(pl.col("split") == split).select(SFT_COLUMNS)
        write_ndjson(part, join(out, path))
        setattr(report, f"sft_{split}_rows", part.height)
