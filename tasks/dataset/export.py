"""Export a built dataset as TRL files: DPO preference rows, KTO unpaired rows (SFT: export_sft).

    dpo/train.jsonl, dpo/eval.jsonl   {"prompt": [...], "chosen": [...], "rejected": [...], ...}
    kto/train.jsonl                   {"prompt": [...], "completion": [...], "label": bool, ...}

Everything is a polars lazy pipeline over ``runs.parquet``, ``pairs.parquet`` (rejected
sides filled) and ``scored.parquet``: prompts are joined in from the runs'
conversations only here, at the end.
"""

from __future__ import annotations

import hashlib
import logging
from dataclasses import dataclass, field

import polars as pl

from agir_retrain.tasks.filenames import (
    LABELLED_TRAIN,
    PAIRS_FILE,
    PREFERENCE_EVAL,
    PREFERENCE_TRAIN,
    RUNS_FILE,
    SCORED_FILE,
)
from agir_retrain.tasks.io import atomic_output, join
from agir_retrain.tasks.records import GarbleMethod, PromptKind, RunClass
from agir_retrain.tasks.runs.pairing import borrowed_chosen_pairs, cross_run_pairs
from agir_retrain.tasks.settings.models import ExportSettings

log = logging.getLogger(__name__)

DPO_COLUMNS = (
    "prompt", "chosen", "rejected", "score_chosen", "score_rejected", "rule", "garbled",
    "garble_method", "run_id", "source",
)  # fmt: skip
KTO_COLUMNS = (
    "prompt", "completion", "label", "score", "prompt_kind", "response_kind", "outcome",
    "run_id", "source",
)  # fmt: skip


@dataclass(slots=True, kw_only=True)
class ExportReport:
    """What the export wrote."""

    dpo_train_rows: int = 0
    dpo_eval_rows: int = 0
    train_runs: int = 0
    eval_runs: int = 0
    duplicates_dropped: int = 0
    pairs_by_rule: dict[str, int] = field(default_factory=dict)
    unfilled_pairs_dropped: int = 0
    kto_rows: int = 0
    kto_desirable: int = 0
    kto_skipped_inconsistent: int = 0
    kto_skipped_no_prompt: int = 0
    sft_train_rows: int = 0
    sft_eval_rows: int = 0


def split_of(run_id: str, seed: int, eval_share: float) -> str:
    """``"eval"`` or ``"train"`` for a run: a stable hash of (seed, run id) against the share."""
    digest = hashlib.blake2b(f"{seed}\x1f{run_id}".encode(), digest_size=8).digest()
    return "eval" if int.from_bytes(digest, "big") / 2**64 < eval_share else "train"


def prompt_column() -> pl.Expr:
    """A row's prompt messages, from its run's conversation and its prompt kind."""
    kind = pl.col("prompt_kind").cast(pl.String)
    return (
        pl.when(kind == PromptKind.STRATEGY.value)
        .then(pl.col("conversation").list.head(pl.col("strategy_turns")))
        .when(kind == PromptKind.CODE.value)
        # v5 chains keep P_s and P_c back to back: P_c starts at code_prompt_start (0 for v4).
        .then(
            pl.col("conversation").list.slice(
                pl.col("code_prompt_start"), pl.col("code_turns") - pl.col("code_prompt_start")
            )
        )
        .otherwise(pl.col("env_getter_prompt"))
        .alias("prompt")
    )


def assistant_column(column: str) -> pl.Expr:
    """A text column as a one-message assistant turn (TRL's conversational completion)."""
    return pl.concat_list(pl.struct(role=pl.lit("assistant"), content=pl.col(column)))


def export_dataset(folder: str, out: str, settings: ExportSettings) -> ExportReport:
    """Write the DPO (and KTO) files for the dataset tables in ``folder`` under ``out``."""
    runs = pl.scan_parquet(join(folder, RUNS_FILE))
    pairs = pl.scan_parquet(join(folder, PAIRS_FILE)).with_columns(
        pl.col("rule", "prompt_kind", "garble_method").cast(pl.String)
    )
    string_runs = runs.with_columns(pl.col("run_class").cast(pl.String))
    extra = []
    if settings.borrowed_chosen:
        extra.append(borrowed_chosen_pairs(string_runs))
    if settings.cross_run_pairs:
        extra.append(cross_run_pairs(string_runs))
    all_pairs = pl.concat([pairs, *extra], how="vertical_relaxed") if extra else pairs
    report = ExportReport()
    unfilled = all_pairs.filter(pl.col("rejected").is_null()).select(pl.len()).collect().item()
    report.unfilled_pairs_dropped = unfilled
    if unfilled:
        log.warning(
            "%d pairs still have no rejected side and are left out of the DPO files", unfilled
        )

    prompts = runs.select(
        "run_id",
        "conversation",
        "strategy_turns",
        "code_turns",
        "code_prompt_start",
        "env_getter_prompt",
    )
    rows = (
        all_pairs.filter(pl.col("rejected").is_not_null())
        .join(prompts, on="run_id", how="left", maintain_order="left")
        .select(
            prompt_column(),
            assistant_column("chosen").alias("chosen"),
            assistant_column("rejected").alias("rejected"),
            "score_chosen",
            "score_rejected",
            "rule",
            (pl.col("garble_method") != GarbleMethod.NONE.value).alias("garbled"),
            "garble_method",
            "run_id",
            "source",
        )
    )
    deduped = rows.unique(
        subset=["prompt", "chosen", "rejected"], keep="first", maintain_order=True
    ).collect()
    report.duplicates_dropped = rows.select(pl.len()).collect().item() - deduped.height
    report.pairs_by_rule = dict(sorted(deduped.group_by("rule").len().iter_rows()))
    run_ids = deduped.get_column("run_id").unique(maintain_order=True).to_list()
    splits = pl.DataFrame(
        {
            "run_id": run_ids,
            "split": [split_of(r, settings.split_seed, settings.eval_share) for r in run_ids],
        },
        schema={"run_id": pl.String, "split": pl.String},  # no pairs: an empty, typed frame
    )
    deduped = deduped.join(splits, on="run_id", how="left", maintain_order="left")
    for split, path in (("train", PREFERENCE_TRAIN), ("eval", PREFERENCE_EVAL)):
        part = deduped.filter(pl.col("split") == split).select(DPO_COLUMNS)
        write_ndjson(part, join(out, path))
        setattr(report, f"dpo_{split}_rows", part.height)
        setattr(report, f"{split}_runs", part.get_column("run_id").n_unique())
    if settings.sft:
        from agir_retrain.tasks.dataset.export_sft import export_sft  # it builds on this module

        export_sft(folder, out, settings, report)
    if settings.kto:
        _export_kto(runs, join(folder, SCORED_FILE), join(out, LABELLED_TRAIN), report)
    log.info(
        "exported %d train and %d eval DPO rows (%d duplicates dropped), %d KTO rows",
        report.dpo_train_rows, report.dpo_eval_rows, report.duplicates_dropped, report.kto_rows,
    )  # fmt: skip
    return report


def _export_kto(runs: pl.LazyFrame, scored_path: str, target: str, report: ExportReport) -> None:
    scored = pl.scan_parquet(scored_path).join(
        runs.select(
            "run_id",
            "source",
            "run_class",
            "conversation",
            "strategy_turns",
            "code_turns",
            "code_prompt_start",
            "env_getter_prompt",
        ),
        on="run_id",
        how="left",
        maintain_order="left",
    )
    inconsistent = pl.col("run_class") == RunClass.INCONSISTENT.value
    report.kto_skipped_inconsistent = scored.filter(inconsistent).select(pl.len()).collect().item()
    rows = (
        scored.filter(~inconsistent)
        .select(
            prompt_column(),
            assistant_column("response").alias("completion"),
            (pl.col("score_bytes") > 0).alias("label"),
            pl.col("score_bytes").alias("score"),
            pl.col("prompt_kind", "response_kind", "outcome").cast(pl.String),
            "run_id",
            "source",
        )
        .select(KTO_COLUMNS)
        .collect()
    )
    # A record whose prompt the corpus lacks (a v5 chain whose strategy_list or getter
    # records were lost, a file with no getter codes) teaches nothing: counted, not written.
    has_prompt = pl.col("prompt").list.len() > 0
    report.kto_skipped_no_prompt = rows.filter(~has_prompt).height
    rows = rows.filter(has_prompt)
    write_ndjson(rows, target)
    report.kto_rows = rows.height
    report.kto_desirable = int(rows.get_column("label").sum())


def write_ndjson(frame: pl.DataFrame, target: str) -> None:
    with atomic_output(target) as staged:
        frame.write_ndjson(staged)
