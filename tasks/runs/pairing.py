"""Pair runs into preference rows by the seed's table 2.

``mixed`` runs give natural pairs (success code over each failed code);
``first_try`` runs give two garble requests, whose rejected side the garbling
stage samples from the base model. Every other class gives nothing.
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass

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
