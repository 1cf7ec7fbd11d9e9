"""Score runs: normalise space freed to bytes, classify each run, and emit seed table 1.

Pure functions over records; nothing here knows about files, Prefect or Ray.
"""

from __future__ import annotations

from collections import Counter
from dataclasses import dataclass

from agir_retrain.tasks.records import (
    Attempt,
    Outcome,
    PromptKind,
    ResponseKind,
    Run,
    RunClass,
    ScoredRecord,
    UnitConvention,
)

KIB = 1 << 10
MIB = 1 << 20  # the spec's "MB": the agent read `df -m /`, whose unit is the MiB

_BYTES_PER_RAW_UNIT = {
    UnitConvention.KIB_NEW_MINUS_OLD: KIB,
    UnitConvention.MIB_OLD_MINUS_NEW: -MIB,  # the sign is reversed: freed space was negative
    UnitConvention.KIB_FREED_V5: KIB,  # v5 this_code_space_change_kb: already positive = freed
}


def normalise_space_freed(raw: float | None, convention: UnitConvention) -> float:
    """Turn a file's ``space_freed`` into bytes, positive when space was freed.

    ``None`` (no figure recorded) becomes 0.0.
    """
    if raw is None:
        return 0.0
    # `+ 0.0` turns -0.0 into 0.0 so that equal inputs give equal bytes.
    return raw * _BYTES_PER_RAW_UNIT[convention] + 0.0


@dataclass(frozen=True, slots=True, kw_only=True)
class RunVerdict:
    """A run's class, a short reason code, and the detail a person reads."""

    run_class: RunClass
    reason: str
    detail: str


def classify_run(
    *,
    attempts: tuple[Attempt, ...],
    space_freed_bytes: float,
    space_freed_known: bool,
    strategy: str,
    has_strategy_prompt: bool,
    has_code_prompt: bool,
) -> RunVerdict:
    """Put a run in exactly one of the seed's classes (``seed-rules.md``, table 2).

    Contradictions come first: a run that claims success without space freed (or
    the reverse), succeeds twice, goes on after succeeding, or lacks the turns its
    pairs would need is ``inconsistent``, with the reason, and is not paired.
    """
    successes = [a for a in attempts if a.outcome is Outcome.SUCCESS]
    inconsistent = _contradiction(
        attempts=attempts,
        successes=successes,
        space_freed_bytes=space_freed_bytes,
        space_freed_known=space_freed_known,
        strategy=strategy,
        has_strategy_prompt=has_strategy_prompt,
        has_code_prompt=has_code_prompt,
    )
    if inconsistent is not None:
        return RunVerdict(
            run_class=RunClass.INCONSISTENT, reason=inconsistent[0], detail=inconsistent[1]
        )
    if not attempts:
        return RunVerdict(
            run_class=RunClass.NO_RUNNABLE, reason="no_attempts", detail="no code attempt"
        )
    if not any(a.outcome.ran for a in attempts):
        return RunVerdict(
            run_class=RunClass.NO_RUNNABLE,
            reason="no_attempt_ran",
            detail=_outcome_counts(attempts),
        )
    if not successes:
        return RunVerdict(
            run_class=RunClass.NEVER_FREED,
            reason="none_freed_space",
            detail=_outcome_counts(attempts),
        )
    if len(attempts) == 1:
        return RunVerdict(
            run_class=RunClass.FIRST_TRY,
            reason="first_attempt_succeeded",
            detail=f"freed {space_freed_bytes:.0f} bytes",
        )
    return RunVerdict(
        run_class=RunClass.MIXED,
        reason="succeeded_after_failures",
        detail=f"{_outcome_counts(attempts[:-1])}, then freed {space_freed_bytes:.0f} bytes",
    )


def _contradiction(
    *,
    attempts: tuple[Attempt, ...],
    successes: list[Attempt],
    space_freed_bytes: float,
    space_freed_known: bool,
    strategy: str,
    has_strategy_prompt: bool,
    has_code_prompt: bool,
) -> tuple[str, str] | None:
    if len(successes) > 1:
        return "several_successes", f"{len(successes)} attempts tagged success"
    if successes and successes[0] is not attempts[-1]:
        return "attempts_after_success", f"success at attempt {successes[0].index}, then more"
    if successes and not space_freed_known:
        return "space_freed_unknown", "success tagged, but the file gives no figure for this run"
    if successes and space_freed_bytes <= 0:
        return "success_without_space_freed", (
            f"success tagged, but space freed is {space_freed_bytes:.0f} bytes"
        )
    if not successes and space_freed_bytes > 0:
        return "space_freed_without_success", (
            f"{space_freed_bytes:.0f} bytes freed, but no attempt is tagged success"
        )
    if attempts and not has_code_prompt:
        return "attempts_without_code_request", "code attempts, but no code request turn"
    if attempts and not strategy.strip():
        return "empty_strategy", "code attempts, but chosen_strat is empty"
    if successes and len(attempts) == 1 and not has_strategy_prompt:
        return "missing_strategy_request", "first-try success, but no strategy request turn"
    return None


def _outcome_counts(attempts: tuple[Attempt, ...]) -> str:
    counts = Counter(a.outcome.value for a in attempts)
    return ", ".join(f"{n} {outcome}" for outcome, n in sorted(counts.items()))


def score_run(run: Run) -> list[ScoredRecord]:
    """Emit a run's seed table-1 records, two for every attempt, in attempt order.

    A success scores the run's bytes freed on its code (prompt ``P_c``) and its
    strategy (``P_s``); a failure scores 0 on its code and on the strategy, whose
    prompt is ``P_s`` when the code ran (``deletion_fail``) and the env-getter
    prompt when it did not.
    """
    records: list[ScoredRecord] = []
    for attempt in run.attempts:
        if attempt.outcome is Outcome.SUCCESS:
            score, strat_prompt = run.space_freed_bytes, PromptKind.STRATEGY
        elif attempt.outcome is Outcome.DELETION_FAIL:
            score, strat_prompt = 0.0, PromptKind.STRATEGY
        else:
            score, strat_prompt = 0.0, PromptKind.ENV_GETTER
        code_record = ScoredRecord(
            run_id=run.run_id,
            attempt_index=attempt.index,
            outcome=attempt.outcome,
            prompt_kind=PromptKind.CODE,
            response_kind=ResponseKind.CODE,
            response=attempt.message,
            score_bytes=score,
        )
        strat_record = ScoredRecord(
            run_id=run.run_id,
            attempt_index=attempt.index,
            outcome=attempt.outcome,
            prompt_kind=strat_prompt,
            response_kind=ResponseKind.STRAT,
            response=run.strategy,
            score_bytes=score,
        )
        records.extend((code_record, strat_record))
    return records
