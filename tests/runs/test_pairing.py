"""Seed table 2: exact pair rows for each class."""

from __future__ import annotations

import dataclasses

from agir_retrain.tasks.records import GarbleMethod, Pair, PairRule, PromptKind, RunClass
from agir_retrain.tasks.runs.pairing import pair_run, same_code
from agir_retrain.tasks.runs.reader import read_run_file
from agir_retrain.tasks.runs.scoring import KIB


class TestPairRun:
    def test_mixed_pairs_success_over_each_failure(self, data_file):
        run = read_run_file(data_file("v4_kib.json")).runs[1]
        ast, deletion, success = run.attempts
        common = {
            "run_id": run.run_id,
            "source": run.source,
            "rule": PairRule.MIXED,
            "prompt_kind": PromptKind.CODE,
            "chosen": success.message,
            "score_chosen": 512.0 * KIB,
            "score_rejected": 0.0,
            "garble_method": GarbleMethod.NONE,
        }
        assert pair_run(run).pairs == (
            Pair(rejected=ast.message, rejected_attempt_index=0, **common),
            Pair(rejected=deletion.message, rejected_attempt_index=1, **common),
        )
        assert run.prompt(PromptKind.CODE) == run.code_prompt

    def test_first_try_gives_two_garble_requests(self, data_file):
        run = read_run_file(data_file("v4_kib.json")).runs[0]
        strat_pair, code_pair = pair_run(run).pairs
        assert (strat_pair.rule, strat_pair.prompt_kind, strat_pair.chosen) == (
            PairRule.FIRST_TRY_STRAT,
            PromptKind.STRATEGY,
            run.strategy,
        )
        assert (code_pair.rule, code_pair.prompt_kind, code_pair.chosen) == (
            PairRule.FIRST_TRY_CODE,
            PromptKind.CODE,
            run.attempts[0].message,
        )
        for pair in (strat_pair, code_pair):
            assert pair.rejected is None
            assert pair.garble_method is GarbleMethod.PENDING
            assert pair.garbled
            assert pair.score_chosen == 2048 * KIB

    def test_other_classes_give_nothing(self, data_file):
        runs = read_run_file(data_file("v4_kib.json")).runs
        runs += read_run_file(data_file("v4_mib_reversed.json")).runs
        for run in runs:
            if run.run_class not in (RunClass.MIXED, RunClass.FIRST_TRY):
                assert pair_run(run).pairs == ()

    def test_failed_code_equal_to_the_success_is_skipped_and_counted(self, data_file):
        run = read_run_file(data_file("v4_kib.json")).runs[1]
        ast, deletion, success = run.attempts
        same = dataclasses.replace(deletion, message=success.message + "\n", code=success.code)
        run = dataclasses.replace(run, attempts=(ast, same, success))
        result = pair_run(run)
        assert [p.rejected_attempt_index for p in result.pairs] == [0]
        assert result.skipped_identical == 1

    def test_same_code_compares_inside_the_fences(self, data_file):
        ast, deletion, success = read_run_file(data_file("v4_kib.json")).runs[1].attempts
        assert same_code(success, dataclasses.replace(ast, message="other", code=success.code))
        assert not same_code(success, deletion)
