"""Form v5 chains: one agent run's attempt records become runs of the seed's rules.

A chain is the ``strategy_code`` records sharing (run_id, strategies_hash, strategy),
ordered by ``current_attempt``; its class follows ``agir-run-format.md`` ("v5 records"),
first match wins. The agent run's other records give the chain its prompts: the
``strategy_list`` record whose strategies hash to the chain's ``strategies_hash`` gives
``P_s``, and the ``special_environment_getter_code`` records whose outputs the chain
saw (``special_env_info_hashes``) give the env-getter prompt. Pure functions: nothing
here reads files.
"""

from __future__ import annotations

import hashlib
from collections import Counter
from collections.abc import Iterable, Sequence

from agir_retrain.tasks.records import (
    Attempt,
    Message,
    Outcome,
    Role,
    Run,
    RunClass,
    UnitConvention,
)
from agir_retrain.tasks.runs.formats.v5.counts import V5Counts
from agir_retrain.tasks.runs.formats.v5.schema import FORMAT_NAME, V5Record, V5RecordType
from agir_retrain.tasks.runs.scoring import RunVerdict, normalise_space_freed


def chain_run_id(version: str, agent_run_id: str, strategies_hash: str, strategy: str) -> str:
    """A chain's run id: the agent run, and a hash of its strategy list and strategy.

    Stable (content alone decides it, not file names or shards) and unique (the key
    that forms the chain is in it).
    """
    digest = hashlib.blake2b(f"{strategies_hash}\x1f{strategy}".encode(), digest_size=6).hexdigest()
    return f"{version}_{agent_run_id}#{digest}"


def chain_runs(records: Iterable[V5Record], counts: V5Counts | None = None) -> list[Run]:
    """Form and classify the chains of one agent run's records (same version and run_id).

    What forming them finds beyond the runs (lost attempts, unlinked prompts) is added
    to ``counts``. Runs come out in a stable order (by run id), whatever order the
    records came in.
    """
    counts = counts if counts is not None else V5Counts()
    chains: dict[tuple[str, str], list[V5Record]] = {}
    getters: dict[str, tuple[tuple[int, str], str]] = {}
    lists: dict[str, tuple[tuple[int, str], V5Record]] = {}
    for record in records:
        if record.record_type is V5RecordType.STRATEGY_CODE:
            key = (record.strategies_hash or "", record.strategy or "")
            chains.setdefault(key, []).append(record)
        elif record.outcome is Outcome.SUCCESS and record.result_hash is not None:
            order = (record.current_attempt, record.source)
            if record.record_type is V5RecordType.ENV_GETTER_CODE and record.code is not None:
                if record.result_hash not in getters or order < getters[record.result_hash][0]:
                    getters[record.result_hash] = (order, record.code)
            elif record.record_type is V5RecordType.STRATEGY_LIST:
                if record.result_hash not in lists or order < lists[record.result_hash][0]:
                    lists[record.result_hash] = (order, record)
    runs = [
        _chain_run(
            sorted(attempts, key=lambda r: (r.current_attempt, r.source)),
            {h: code for h, (_, code) in getters.items()},
            {h: record for h, (_, record) in lists.items()},
            counts,
        )
        for attempts in chains.values()
    ]
    return sorted(runs, key=lambda run: run.run_id)


def _chain_run(
    attempts: list[V5Record],
    getters: dict[str, str],
    lists: dict[str, V5Record],
    counts: V5Counts,
) -> Run:
    first = attempts[0]
    strategy = first.strategy or ""
    verdict, missing = classify_chain(attempts)
    counts.attempts_missing += len(missing)
    counts.chains_by_attempts_missing[str(len(missing))] += 1

    listed = lists.get(first.strategies_hash or "")
    strategy_prompt = listed.prompt if listed is not None else ()
    counts.strategy_prompt_missing += listed is None
    codes = [getters[h] for h in first.special_env_info_hashes if h in getters]
    env_getter_prompt = (Message(role=Role.USER, content="\n\n".join(codes)),) if codes else ()
    counts.env_getter_prompt_missing += bool(first.special_env_info_hashes) and not codes

    runnable = [a for a in attempts if a.outcome.ran]
    space_raw = runnable[-1].space_change_kib if runnable else None
    return Run(
        run_id=chain_run_id(
            first.version, first.agent_run_id, first.strategies_hash or "", strategy
        ),
        source=first.source,
        copy_index=(
            listed.strategies.index(strategy)
            if listed is not None and strategy in listed.strategies
            else -1
        ),
        file_schema=FORMAT_NAME,
        model_name=None,  # v5 records do not name the model
        strategy=strategy,
        conversation=strategy_prompt + first.prompt,
        strategy_turns=len(strategy_prompt),
        code_turns=len(strategy_prompt) + len(first.prompt),
        env_getter_prompt=env_getter_prompt,
        attempts=tuple(
            Attempt(
                index=a.current_attempt - 1,  # 0-based like v4; gaps show the lost attempts
                outcome=a.outcome,
                message=a.raw_response,
                code=a.code,
            )
            for a in attempts
        ),
        space_freed_raw=space_raw,
        space_freed_bytes=normalise_space_freed(space_raw, UnitConvention.KIB_FREED_V5),
        unit_convention=UnitConvention.KIB_FREED_V5,
        run_class=verdict.run_class,
        class_reason=verdict.reason,
        class_detail=verdict.detail,
        code_prompt_start=len(strategy_prompt),
        attempts_missing=len(missing),
    )


def missing_attempts(numbers: Iterable[int]) -> list[int]:
    """Attempt numbers from 1 to the highest present that no record carries."""
    present = set(numbers)
    return [n for n in range(1, max(present, default=0) + 1) if n not in present]


def classify_chain(attempts: Sequence[V5Record]) -> tuple[RunVerdict, list[int]]:
    """Put a chain (its records sorted by attempt number) in one class; list its lost attempts."""
    numbers = [a.current_attempt for a in attempts]
    missing = missing_attempts(numbers)
    lost = f"; attempts {', '.join(map(str, missing))} missing" if missing else ""
    runnable = [a for a in attempts if a.outcome.ran]
    success = next((a for a in attempts if a.outcome is Outcome.SUCCESS), None)
    failed = [a for a in attempts if not a.outcome.ran]
    counts = _outcome_counts(attempts) + lost

    def verdict(run_class: RunClass, reason: str, detail: str) -> tuple[RunVerdict, list[int]]:
        return RunVerdict(run_class=run_class, reason=reason, detail=detail), missing

    repeated = sorted(n for n, k in Counter(numbers).items() if k > 1)
    if repeated:
        return verdict(
            RunClass.INCONSISTENT,
            "duplicate_attempt_numbers",
            f"attempt {', '.join(map(str, repeated))} in more than one file",
        )
    if len(runnable) > 1:
        return verdict(
            RunClass.INCONSISTENT,
            "multiple_runnable_attempts",
            f"attempts {', '.join(str(a.current_attempt) for a in runnable)} all ran",
        )
    if runnable and numbers[-1] > runnable[0].current_attempt:
        return verdict(
            RunClass.INCONSISTENT,
            "attempt_after_runnable",
            f"attempt {runnable[0].current_attempt} ran, then attempt {numbers[-1]}",
        )
    if not runnable:
        return verdict(RunClass.NO_RUNNABLE, "no_attempt_ran", counts)
    if success is None:
        return verdict(RunClass.NEVER_FREED, "none_freed_space", counts)
    freed = f"freed {success.space_change_kib:.0f} KiB"
    if failed:
        return verdict(RunClass.MIXED, "succeeded_after_failures", f"{counts}; {freed}")
    if success.current_attempt == 1:
        return verdict(RunClass.FIRST_TRY, "first_attempt_succeeded", freed)
    return verdict(
        RunClass.INCONSISTENT,
        "attempts_missing",
        f"success at attempt {success.current_attempt} with no failure on file{lost}",
    )


def _outcome_counts(attempts: Sequence[V5Record]) -> str:
    counts = Counter(a.outcome.value for a in attempts)
    return ", ".join(f"{n} {outcome}" for outcome, n in sorted(counts.items()))
