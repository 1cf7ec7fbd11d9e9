"""Metrics: the pass@k estimator, per-model rates, intervals and paired differences."""

from __future__ import annotations

import dataclasses
import math
from fractions import Fraction

import polars as pl
import pytest

from agir_retrain.tasks.environment.contract import Episode, StoppedBy
from agir_retrain.tasks.evaluation.eval_json import report_json
from agir_retrain.tasks.evaluation.metrics import (
    MetricsError,
    compute_report,
    metric_rows,
    pass_at_k,
    report_markdown,
    table_cells,
)
from agir_retrain.tasks.evaluation.report import episodes_frame


def episode(
    task: str,
    model: str,
    sample: int,
    *,
    success: bool = False,
    code: bool = True,
    exit_code: int | None = 0,
    share: float = 0.0,
    damaged: tuple[str, ...] = (),
    stopped: StoppedBy | None = None,
) -> Episode:
    return Episode(
        task_id=task,
        model=model,
        sample=sample,
        code_found=code,
        exit_code=exit_code if code else None,
        stopped_by=stopped,
        junk_bytes_total=1000,
        junk_bytes_freed=round(share * 1000),
        new_bytes=0,
        protected_damaged=damaged,
        freed_share=share,
        success=success,
        seconds=0.1,
        stdout_tail="",
        stderr_tail="",
    )


class TestPassAtK:
    @pytest.mark.parametrize(
        ("n", "c", "k", "expected"),
        [
            (5, 0, 1, Fraction(0)),
            (5, 2, 1, Fraction(2, 5)),  # pass@1 is c / n
            (5, 2, 2, 1 - Fraction(3, 10)),  # 1 - C(3,2)/C(5,2) = 1 - 3/10
            (5, 2, 3, 1 - Fraction(1, 10)),  # 1 - C(3,3)/C(5,3) = 1 - 1/10
            (5, 2, 4, Fraction(1)),  # n - c < k: every 4 of 5 hold a success
            (10, 1, 5, Fraction(1, 2)),  # 1 - C(9,5)/C(10,5) = 1 - 126/252
            (4, 4, 4, Fraction(1)),
        ],
    )
    def test_unbiased_estimator(self, n: int, c: int, k: int, expected: Fraction) -> None:
        assert pass_at_k(n, c, k) == pytest.approx(float(expected), abs=1e-15)

    def test_k_larger_than_n_is_an_error(self) -> None:
        with pytest.raises(MetricsError, match="k <= n"):
            pass_at_k(2, 1, 3)


def two_models() -> pl.DataFrame:
    """Model a: 4 tasks x 2 samples with known outcomes; model b: the same tasks, worse."""
    rows = [
        # task t0: both samples succeed
        episode("t0", "a", 0, success=True, share=0.5),
        episode("t0", "a", 1, success=True, share=0.25),
        # t1: one success, one run that damaged a protected file
        episode("t1", "a", 0, success=True, share=1.0),
        episode("t1", "a", 1, share=0.5, damaged=("/home/x",)),
        # t2: a timeout, and a sample with no code
        episode("t2", "a", 0, exit_code=137, stopped=StoppedBy.TIMEOUT),
        episode("t2", "a", 1, code=False),
        # t3: ran, freed nothing
        episode("t3", "a", 0),
        episode("t3", "a", 1, exit_code=1),
    ]
    rows += [episode(t, "b", s, code=False) for t in ("t0", "t1", "t2", "t3") for s in (0, 1)]
    return episodes_frame(rows)


class TestReport:
    def test_harness_failures_are_left_out_and_counted(self) -> None:
        """An episode the sandbox failed says nothing of the model: not scored, but reported."""
        failed = [
            episode("t0", "a", 2, exit_code=None, stopped=StoppedBy.HARNESS),
            episode("t3", "a", 2, exit_code=None, stopped=StoppedBy.HARNESS),
        ]
        frame = pl.concat([two_models(), episodes_frame(failed)])
        with_failures = compute_report(frame, models=["b", "a"], k=2, seed=1)
        without = compute_report(two_models(), models=["b", "a"], k=2, seed=1)
        assert with_failures.models[1].harness_excluded == 2
        assert with_failures.models[0].harness_excluded == 0
        assert dataclasses.replace(with_failures.models[1], harness_excluded=0) == without.models[1]
        assert report_json(with_failures)["models"]["a"]["harness_excluded"] == 2

    def test_rates_are_means_over_tasks(self) -> None:
        report = compute_report(two_models(), models=["b", "a"], k=2, seed=1)
        a = report.models[1]
        assert (a.model, a.tasks, a.samples) == ("a", 4, 8)
        # per task c/n: 1, 1/2, 0, 0 -> mean 3/8
        assert a.pass_at_1.value == pytest.approx(3 / 8)
        # pass@2 per task: 1, 1, 0, 0
        assert a.pass_at_k.value == pytest.approx(0.5)
        assert a.code_found_rate.value == pytest.approx((1 + 1 + 0.5 + 1) / 4)
        assert a.ran_rate.value == pytest.approx((1 + 1 + 0 + 0.5) / 4)
        assert a.mean_freed_share.value == pytest.approx((0.375 + 0.75 + 0 + 0) / 4)
        assert a.damage_rate.value == pytest.approx(0.5 / 4)
        assert a.timeout_rate.value == pytest.approx(0.5 / 4)
        b = report.models[0]
        assert b.pass_at_1.value == 0
        assert b.code_found_rate.value == 0
        assert b.pass_at_1.ci_low == b.pass_at_1.ci_high == 0  # no spread to resample

    def test_intervals_contain_the_point_and_lie_in_range(self) -> None:
        report = compute_report(two_models(), seed=3)
        for row in metric_rows(report):
            if row.ci_low is None:
                continue
            assert row.ci_low <= row.value <= row.ci_high, row
            low, high = (-1, 1) if row.section == "differences" else (0, 1)
            assert low <= row.ci_low, row
            assert row.ci_high <= high, row
        a = report.models[0]
        assert a.pass_at_1.ci_low < a.pass_at_1.ci_high  # tasks differ: a real interval

    def test_paired_difference(self) -> None:
        report = compute_report(two_models(), models=["b", "a"], seed=0)
        (diff,) = report.differences
        assert (diff.model, diff.baseline, diff.tasks) == ("a", "b", 4)
        assert diff.pass_at_1.value == pytest.approx(3 / 8)
        assert diff.mean_freed_share.value == pytest.approx(1.125 / 4)
        # a is never worse than b on any task, so no resample can favour b
        assert diff.pass_at_1.ci_low >= 0

    def test_same_inputs_same_report_and_seed_matters(self) -> None:
        frame = two_models()
        first = compute_report(frame, seed=7)
        assert compute_report(frame.sample(fraction=1.0, shuffle=True, seed=5), seed=7) == first
        assert compute_report(frame, seed=8) != first

    def test_a_models_interval_does_not_depend_on_the_others(self) -> None:
        frame = two_models()
        alone = compute_report(frame.filter(pl.col("model") == "a"), seed=2).models[0]
        together = compute_report(frame, seed=2).models[0]
        assert alone == together

    def test_k_defaults_to_fewest_samples_and_too_large_k_fails(self) -> None:
        frame = two_models().filter(~((pl.col("task_id") == "t3") & (pl.col("sample") == 1)))
        assert compute_report(frame).k == 1
        with pytest.raises(MetricsError, match="task 't3'"):
            compute_report(frame, k=2)

    def test_no_episodes_is_an_error(self) -> None:
        with pytest.raises(MetricsError, match="no episodes"):
            compute_report(episodes_frame([]))

    def test_unnamed_model_is_an_error(self) -> None:
        with pytest.raises(MetricsError, match="not among"):
            compute_report(two_models(), models=["a"])


class TestRendering:
    def test_json_shape(self) -> None:
        doc = report_json(compute_report(two_models(), models=["b", "a"], k=2, seed=0))
        assert set(doc) == {
            "k",
            "confidence",
            "bootstrap_resamples",
            "seed",
            "models",
            "differences",
        }
        assert list(doc["models"]) == ["b", "a"]
        a = doc["models"]["a"]
        assert set(a) == {
            "tasks", "samples", "harness_excluded", "code_found_rate", "ran_rate", "pass_at_1",
            "pass_at_k", "mean_freed_share", "damage_rate", "timeout_rate",
        }  # fmt: skip
        assert a["tasks"] == 4
        assert a["samples"] == 8
        assert a["harness_excluded"] == 0
        assert set(a["pass_at_1"]) == {"value", "ci_low", "ci_high"}
        assert doc["differences"][0]["model"] == "a"
        assert doc["differences"][0]["baseline"] == "b"

    def test_tables_come_from_the_same_rows(self) -> None:
        report = compute_report(two_models(), models=["b", "a"], k=2, seed=0)
        models, differences = table_cells(report)
        assert models[0][:3] == ["model", "tasks", "samples"]
        assert "pass@2" in models[0]
        assert models[2][0] == "a"
        assert models[2][1] == "4"
        assert models[2][models[0].index("pass@1")].startswith("0.375 [")
        assert differences[1][0] == "a - b"
        single, _ = table_cells(compute_report(two_models(), k=1))
        assert "pass@k (k=1)" in single[0]
        assert single[0].count("pass@1") == 1
        markdown = report_markdown(report)
        assert "| a | 4 | 8 |" in markdown
        assert "a - b" in markdown

    def test_an_undefined_difference_is_null_not_nan(self) -> None:
        frame = two_models().with_columns(
            task_id=pl.when(pl.col("model") == "b").then(pl.lit("other")).otherwise("task_id")
        )
        doc = report_json(compute_report(frame, seed=0))
        assert doc["differences"][0]["tasks"] == 0
        assert doc["differences"][0]["pass_at_1"] == {
            "value": None,
            "ci_low": None,
            "ci_high": None,
        }
        assert math.isnan(compute_report(frame, seed=0).differences[0].pass_at_1.value)


def test_eval_json_reads_back_as_the_report_it_was_written_from():
    from agir_retrain.tasks.evaluation.eval_json import report_from_json

    report = compute_report(two_models(), models=["b", "a"], k=2, seed=1)
    data = report_json(report)
    assert report_json(report_from_json(data)) == data
    assert report_from_json(data).differences[0].ran_rate == report.differences[0].ran_rate
