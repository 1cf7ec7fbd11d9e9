"""Seed table 1 (scored records) and the class of each run, row by row."""

from __future__ import annotations

import pytest

from agir_retrain.tasks.records import (
    Attempt,
    Outcome,
    PromptKind,
    ResponseKind,
    RunClass,
    ScoredRecord,
    UnitConvention,
)
from agir_retrain.tasks.runs.reader import read_run_file
from agir_retrain.tasks.runs.scoring import KIB, MIB, classify_run, normalise_space_freed, score_run


def attempts(*outcomes: str) -> tuple[Attempt, ...]:
    return tuple(
        Attempt(
            index=i, outcome=Outcome(o), message=f"```python\ncode {i}\n```", code=f"code {i}\n"
        )
        for i, o in enumerate(outcomes)
    )


def classify(outcomes: tuple[str, ...], freed: float = 0.0, **overrides):
    arguments = {
        "attempts": attempts(*outcomes),
        "space_freed_bytes": freed,
        "space_freed_known": True,
        "strategy": "Clear the apt cache",
        "has_strategy_prompt": True,
        "has_code_prompt": True,
    }
    arguments.update(overrides)
    verdict = classify_run(**arguments)
    return verdict.run_class, verdict.reason


class TestClassify:
    @pytest.mark.parametrize(
        ("outcomes", "freed", "expected"),
        [
            ((), 0.0, (RunClass.NO_RUNNABLE, "no_attempts")),
            (
                ("ast_fail", "compile_fail", "container_fail"),
                0.0,
                (RunClass.NO_RUNNABLE, "no_attempt_ran"),
            ),
            (("ast_fail", "deletion_fail"), 0.0, (RunClass.NEVER_FREED, "none_freed_space")),
            (("deletion_fail",), -4096.0, (RunClass.NEVER_FREED, "none_freed_space")),
            (("success",), 10.0, (RunClass.FIRST_TRY, "first_attempt_succeeded")),
            (("container_fail", "success"), 10.0, (RunClass.MIXED, "succeeded_after_failures")),
            (
                ("deletion_fail", "ast_fail", "success"),
                10.0,
                (RunClass.MIXED, "succeeded_after_failures"),
            ),
            (("success",), 0.0, (RunClass.INCONSISTENT, "success_without_space_freed")),
            (("success",), -5.0, (RunClass.INCONSISTENT, "success_without_space_freed")),
            (("deletion_fail",), 5.0, (RunClass.INCONSISTENT, "space_freed_without_success")),
            (("success", "success"), 5.0, (RunClass.INCONSISTENT, "several_successes")),
            (("success", "ast_fail"), 5.0, (RunClass.INCONSISTENT, "attempts_after_success")),
        ],
    )
    def test_classes(self, outcomes, freed, expected):
        assert classify(outcomes, freed) == expected

    def test_success_with_unknown_figure(self):
        assert classify(("success",), 0.0, space_freed_known=False) == (
            RunClass.INCONSISTENT,
            "space_freed_unknown",
        )

    def test_attempts_without_a_code_request(self):
        assert classify(("deletion_fail",), has_code_prompt=False)[1] == (
            "attempts_without_code_request"
        )

    def test_first_try_needs_the_strategy_request(self):
        assert classify(("success",), 1.0, has_strategy_prompt=False)[1] == (
            "missing_strategy_request"
        )

    def test_empty_strategy(self):
        assert classify(("success",), 1.0, strategy="  ")[1] == "empty_strategy"


class TestNormalise:
    def test_kib(self):
        assert normalise_space_freed(3.0, UnitConvention.KIB_NEW_MINUS_OLD) == 3 * KIB

    def test_mib_sign_reversed(self):
        assert normalise_space_freed(-2.0, UnitConvention.MIB_OLD_MINUS_NEW) == 2 * MIB
        assert normalise_space_freed(2.0, UnitConvention.MIB_OLD_MINUS_NEW) == -2 * MIB

    def test_zero_is_positive_zero_and_none_is_zero(self):
        assert str(normalise_space_freed(0.0, UnitConvention.MIB_OLD_MINUS_NEW)) == "0.0"
        assert normalise_space_freed(None, UnitConvention.KIB_NEW_MINUS_OLD) == 0.0


class TestScoreRun:
    def test_mixed_run_rows(self, data_file):
        run = read_run_file(data_file("v4_kib.json")).runs[1]  # ast_fail, deletion_fail, success
        ast, deletion, success = run.attempts
        strat = run.strategy
        assert score_run(run) == [
            # ast_fail: its code scores 0 on P_c; the strategy scores 0 on the env-getter prompt
            ScoredRecord(run_id=run.run_id, attempt_index=0, outcome=Outcome.AST_FAIL,
                         prompt_kind=PromptKind.CODE, response_kind=ResponseKind.CODE,
                         response=ast.message, score_bytes=0.0),
            ScoredRecord(run_id=run.run_id, attempt_index=0, outcome=Outcome.AST_FAIL,
                         prompt_kind=PromptKind.ENV_GETTER, response_kind=ResponseKind.STRAT,
                         response=strat, score_bytes=0.0),
            # deletion_fail: code 0 on P_c; strategy 0 on P_s (the code ran, freed nothing)
            ScoredRecord(run_id=run.run_id, attempt_index=1, outcome=Outcome.DELETION_FAIL,
                         prompt_kind=PromptKind.CODE, response_kind=ResponseKind.CODE,
                         response=deletion.message, score_bytes=0.0),
            ScoredRecord(run_id=run.run_id, attempt_index=1, outcome=Outcome.DELETION_FAIL,
                         prompt_kind=PromptKind.STRATEGY, response_kind=ResponseKind.STRAT,
                         response=strat, score_bytes=0.0),
            # success: code and strategy both score the bytes freed
            ScoredRecord(run_id=run.run_id, attempt_index=2, outcome=Outcome.SUCCESS,
                         prompt_kind=PromptKind.CODE, response_kind=ResponseKind.CODE,
                         response=success.message, score_bytes=512.0 * KIB),
            ScoredRecord(run_id=run.run_id, attempt_index=2, outcome=Outcome.SUCCESS,
                         prompt_kind=PromptKind.STRATEGY, response_kind=ResponseKind.STRAT,
                         response=strat, score_bytes=512.0 * KIB),
        ]  # fmt: skip

    def test_run_without_attempts_has_no_records(self, data_file):
        run = read_run_file(data_file("zero_runs.json")).runs
        assert run == ()
