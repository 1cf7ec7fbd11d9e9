"""Every pairing rule (the seed's table 2, and the two that look across runs), in one place.

Within a run (``pair_run``, at ingest, one run at a time): ``mixed`` runs give natural
pairs (success code over each failed code); ``first_try`` runs give two garble
requests, whose rejected side the garbling stage samples from the base model. Every
other class gives nothing.

Across runs (``borrowed_chosen_pairs``, ``cross_run_pairs``, polars lazy frames over a
whole ``runs.parquet``, applied by the export when its settings ask): a
``never_freed`` run's failed attempts borrow a chosen side from the best success of
their strategy, and a strategy that freed nothing is paired under another run's
strategy prompt with the best strategy that did.
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass

import polars as pl

from agir_retrain.tasks.chat import trim_message
from agir_retrain.tasks.records import (
    Attempt,
    GarbleMethod,
    GarbleRequest,
    Message,
    Outcome,
    Pair,
    PairRule,
    PromptKind,
    Run,
    RunClass,
)


@dataclass(frozen=True, slots=True, kw_only=True)
class RunPairs:
    """A run's pairs, and how many candidate pairs were skipped because both sides matched."""

    pairs: tuple[Pair, ...]
    skipped_identical: int = 0


def same_code(a: Attempt, b: Attempt) -> bool:
    """Tell whether two attempts hold the same code (the text inside their fences)."""
    if a.code is not None and b.code is not None:
        return a.code.strip() == b.code.strip()
    return a.message.strip() == b.message.strip()


def pair_run(run: Run) -> RunPairs:
    """Make a run's preference pairs (or garble requests) by its class.

    A ``mixed`` run's failed attempt whose code equals the successful code gives
    no pair (DPO learns nothing from identical sides); it is counted instead.
    """
    if run.run_class is RunClass.MIXED:
        return _pair_mixed(run)
    if run.run_class is RunClass.FIRST_TRY:
        return RunPairs(pairs=_garble_requests(run))
    return RunPairs(pairs=())


def _pair_mixed(run: Run) -> RunPairs:
    success = run.attempts[-1]
    pairs: list[Pair] = []
    skipped = 0
    for failed in run.attempts[:-1]:
        if same_code(failed, success):
            skipped += 1
            continue
        pairs.append(
            Pair(
                run_id=run.run_id,
                source=run.source,
                rule=PairRule.MIXED,
                prompt_kind=PromptKind.CODE,
                chosen=success.message,
                rejected=failed.message,
                score_chosen=run.space_freed_bytes,
                score_rejected=0.0,
                garble_method=GarbleMethod.NONE,
                rejected_attempt_index=failed.index,
            )
        )
    return RunPairs(pairs=tuple(pairs), skipped_identical=skipped)


def _garble_requests(run: Run) -> tuple[Pair, ...]:
    (success,) = run.attempts
    if success.outcome is not Outcome.SUCCESS:  # classify_run guarantees it; guard the invariant
        raise ValueError(f"{run.run_id}: first_try run whose only attempt is {success.outcome}")
    code = _garble_request(run, PairRule.FIRST_TRY_CODE, PromptKind.CODE, success.message)
    if not run.strategy_turns:
        # Only a v5 chain whose strategy_list record was lost gets here (v4 runs without a
        # strategy request are inconsistent): no P_s to pair the strategy on.
        return (code,)
    return (
        _garble_request(run, PairRule.FIRST_TRY_STRAT, PromptKind.STRATEGY, run.strategy),
        code,
    )


def _garble_request(run: Run, rule: PairRule, prompt_kind: PromptKind, chosen: str) -> Pair:
    return Pair(
        run_id=run.run_id,
        source=run.source,
        rule=rule,
        prompt_kind=prompt_kind,
        chosen=chosen,
        rejected=None,
        score_chosen=run.space_freed_bytes,
        score_rejected=0.0,
        garble_method=GarbleMethod.PENDING,
        rejected_attempt_index=None,
    )


# Requests are stored with each prompt message cut to this many characters (start and end):
# listings can be megabytes, and no garble setting keeps more than this.
REQUEST_MAX_CHARS_PER_MESSAGE = 16_384


def garble_requests(
    run: Run,
    pending: Iterable[tuple[PromptKind, str]],
    max_chars: int = REQUEST_MAX_CHARS_PER_MESSAGE,
) -> list[GarbleRequest]:
    """Requests for a run's pending pairs, given as (prompt kind, chosen text)."""
    return [
        GarbleRequest(
            run_id=run.run_id,
            prompt_kind=kind,
            prompt=tuple(
                Message(role=m.role, content=trim_message(m.content, max_chars))
                for m in run.prompt(kind)
            ),
            chosen=chosen,
        )
        for kind, chosen in pending
    ]


def borrowed_chosen_pairs(runs: pl.LazyFrame) -> pl.LazyFrame:
    """Pair each failed attempt of a never_freed run with the best success of its strategy."""
    success = pl.col("attempts").list.last().struct.field("message")
    donors = (
        runs.filter(pl.col("run_class").is_in([RunClass.MIXED.value, RunClass.FIRST_TRY.value]))
        .select(
            "strategy",
            success.alias("chosen"),
            pl.col("space_freed_bytes").alias("score_chosen"),
            "run_id",
        )
        .sort(["score_chosen", "run_id"], descending=[True, False])
        .unique(subset="strategy", keep="first", maintain_order=True)
        .drop("run_id")
    )
    failed = (
        runs.filter(pl.col("run_class") == RunClass.NEVER_FREED.value)
        .select("run_id", "source", "strategy", "attempts")
        .explode("attempts")
        .select(
            "run_id",
            "source",
            "strategy",
            pl.col("attempts").struct.field("message").alias("rejected"),
            pl.col("attempts").struct.field("index").alias("rejected_attempt_index"),
        )
    )
    return (
        failed.join(donors, on="strategy", how="inner", maintain_order="left")
        .filter(pl.col("chosen") != pl.col("rejected"))
        .select(
            _natural_pair(
                PairRule.BORROWED_CHOSEN, PromptKind.CODE, pl.col("rejected_attempt_index")
            )
        )
    )


def cross_run_pairs(runs: pl.LazyFrame) -> pl.LazyFrame:
    """Strategy pairs across runs sharing a strategy prompt, env figures normalised.

    Each run that freed nothing is paired with the best run of its group that freed
    space and pursued another strategy; the prompt is the freed run's own ``P_s``.
    """
    normalised = (
        pl.col("conversation")
        .list.head(pl.col("strategy_turns"))
        .list.eval(pl.element().struct.field("content").str.replace_all(r"\d+(\.\d+)?", "#"))
        .list.join("\x1f")
        .alias("group")
    )
    keyed = runs.filter(pl.col("strategy_turns") > 0).select(
        "run_id", "source", "strategy", "run_class", "space_freed_bytes", normalised
    )
    freed = (
        keyed.filter(pl.col("run_class").is_in([RunClass.MIXED.value, RunClass.FIRST_TRY.value]))
        .sort(["space_freed_bytes", "run_id"], descending=[True, False])
        .select(
            "group",
            "run_id",
            "source",
            pl.col("strategy").alias("chosen"),
            pl.col("space_freed_bytes").alias("score_chosen"),
        )
    )
    unfreed = keyed.filter(pl.col("run_class") == RunClass.NEVER_FREED.value).select(
        "group", pl.col("strategy").alias("rejected"), pl.col("run_id").alias("rejected_run")
    )
    return (
        unfreed.join(freed, on="group", how="inner")
        .filter(pl.col("chosen") != pl.col("rejected"))
        .sort(["rejected_run", "score_chosen", "run_id"], descending=[False, True, False])
        .unique(subset="rejected_run", keep="first", maintain_order=True)
        .select(
            _natural_pair(
                PairRule.CROSS_RUN_STRAT, PromptKind.STRATEGY, pl.lit(None, dtype=pl.Int32)
            )
        )
    )


def _natural_pair(
    rule: PairRule, prompt_kind: PromptKind, rejected_index: pl.Expr
) -> list[pl.Expr]:
    """The pairs-table columns of an extra rule's pairs (a natural rejected side, score 0)."""
    return [
        pl.col("run_id"),
        pl.col("source"),
        pl.lit(rule.value).alias("rule"),
        pl.lit(prompt_kind.value).alias("prompt_kind"),
        pl.col("chosen"),
        pl.col("rejected"),
        pl.col("score_chosen"),
        pl.lit(0.0).alias("score_rejected"),
        pl.lit(GarbleMethod.NONE.value).alias("garble_method"),
        rejected_index.alias("rejected_attempt_index"),
    ]
