"""v5 attempt records: recognised by content, validated, chained, classified by the spec."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import polars as pl
import pytest

from agir_retrain.tasks.records import (
    Message,
    Outcome,
    QuarantineReason,
    Role,
    Run,
    RunClass,
    UnitConvention,
)
from agir_retrain.tasks.runs.formats.v5.chains import classify_chain, missing_attempts
from agir_retrain.tasks.runs.formats.v5.schema import V5Record, V5RecordType
from agir_retrain.tasks.runs.ingest import ingest
from agir_retrain.tasks.runs.reader import ReadLimits, read_run_file
from agir_retrain.tasks.tables import from_frame

DATA = Path(__file__).parent.parent / "data" / "v5"
PREFIX = "d8c344-v5-0_20250603-0a1b2c"


def _record(
    attempt: int, outcome: Outcome, *, kib: float | None = None, source: str = "f"
) -> V5Record:
    return V5Record(
        group_hash=1,
        source=f"{source}{attempt}",
        record_type=V5RecordType.STRATEGY_CODE,
        version="v",
        agent_run_id="r",
        current_attempt=attempt,
        max_attempts=3,
        prompt=(Message(role=Role.USER, content=f"prompt {attempt}"),),
        raw_response=f"reply {attempt}",
        outcome=outcome,
        code=None,
        strategy="s",
        strategies_hash="h",
        special_env_info_hashes=(),
        strategies=(),
        result_hash=None,
        space_change_kib=kib,
    )


S, D, F = Outcome.SUCCESS, Outcome.DELETION_FAIL, Outcome.RUN_FAIL


class TestClassifyChain:
    @pytest.mark.parametrize(
        ("attempts", "run_class", "reason", "missing"),
        [
            ([(1, F), (1, F)], RunClass.INCONSISTENT, "duplicate_attempt_numbers", []),
            # duplicates win over every later rule, even with a success in the chain
            ([(1, S), (1, F)], RunClass.INCONSISTENT, "duplicate_attempt_numbers", []),
            ([(1, D), (2, S)], RunClass.INCONSISTENT, "multiple_runnable_attempts", []),
            ([(1, S), (3, F)], RunClass.INCONSISTENT, "attempt_after_runnable", [2]),
            ([(1, F), (2, Outcome.EXTRACT_FAIL)], RunClass.NO_RUNNABLE, "no_attempt_ran", []),
            ([(3, Outcome.VALIDATION_FAIL)], RunClass.NO_RUNNABLE, "no_attempt_ran", [1, 2]),
            ([(1, F), (2, D)], RunClass.NEVER_FREED, "none_freed_space", []),
            ([(2, D)], RunClass.NEVER_FREED, "none_freed_space", [1]),
            ([(1, F), (3, S)], RunClass.MIXED, "succeeded_after_failures", [2]),
            ([(1, S)], RunClass.FIRST_TRY, "first_attempt_succeeded", []),
            ([(3, S)], RunClass.INCONSISTENT, "attempts_missing", [1, 2]),
        ],
    )
    def test_rules_in_order(self, attempts, run_class, reason, missing):
        records = [_record(n, o, kib=10.0 if o is S else 0.0) for n, o in attempts]
        verdict, lost = classify_chain(records)
        assert (verdict.run_class, verdict.reason, lost) == (run_class, reason, missing)
        assert verdict.detail

    def test_missing_attempts(self):
        assert missing_attempts([4, 2]) == [1, 3]
        assert missing_attempts([]) == []


class TestReadRecord:
    def test_strategy_code_record(self):
        result = read_run_file(str(DATA / f"{PREFIX}_strategy_code_2025-06-03-10-00-14.json"))
        assert not result.file_quarantined
        assert (result.runs, result.runs_found) == ((), 0)
        (record,) = result.pending
        assert record.record_type is V5RecordType.STRATEGY_CODE
        assert (record.current_attempt, record.outcome, record.space_change_kib) == (3, S, 2048.0)
        assert record.code == "import os\nos.remove('/var/log/syslog.1')"

    def test_recognised_by_content_not_name(self, tmp_path):
        renamed = tmp_path / "full_agent_data_2025_06_03_10_00_14.json"
        shutil.copy(DATA / f"{PREFIX}_strategy_list_2025-06-03-10-00-05.json", renamed)
        (record,) = read_run_file(str(renamed)).pending
        assert record.record_type is V5RecordType.STRATEGY_LIST
        assert record.strategies == ("Remove rotated logs in /var/log", "Clear the apt cache")

    def test_a_v4_file_named_like_v5_stays_v4(self, tmp_path, data_file):
        renamed = tmp_path / f"{PREFIX}_strategy_code_2025-06-03-10-00-14.json"
        shutil.copy(data_file("v4_kib.json"), renamed)
        result = read_run_file(str(renamed))
        assert result.pending == ()
        assert result.runs
        assert {run.file_schema for run in result.runs} == {"v4"}

    def test_code_from_the_reply_when_not_extracted(self, tmp_path):
        document = json.loads(
            (DATA / f"{PREFIX}_strategy_code_2025-06-03-10-00-14.json").read_text()
        )
        document["extract_result_if_ok"] = None
        path = tmp_path / "x.json"
        path.write_text(json.dumps(document, indent=4))
        (record,) = read_run_file(str(path)).pending
        assert record.code == "import os\nos.remove('/var/log/syslog.1')\n"

    @pytest.mark.parametrize("space_kb", [1e308, 10**400])
    def test_space_past_float_range_once_in_bytes_is_quarantined(self, tmp_path, space_kb):
        document = json.loads(
            (DATA / f"{PREFIX}_strategy_code_2025-06-03-10-00-14.json").read_text()
        )
        # 1e308 KiB is a finite float but infinite bytes; 10**400 is no float at all.
        path = tmp_path / "x.json"
        path.write_text(
            json.dumps(document, indent=4).replace(
                '"this_code_space_change_kb": 2048.0', f'"this_code_space_change_kb": {space_kb}'
            )
        )
        result = read_run_file(str(path))
        assert result.pending == ()
        assert [q.reason for q in result.quarantined] == [QuarantineReason.NON_FINITE_NUMBER]

    @pytest.mark.parametrize(
        ("name", "reason"),
        [
            ("wrong_type.json", QuarantineReason.WRONG_TYPE),
            ("missing_key.json", QuarantineReason.MISSING_KEY),
            ("truncated.json", QuarantineReason.TRUNCATED_JSON),
            ("bad_attempt_number.json", QuarantineReason.BAD_ATTEMPT_NUMBER),
            ("no_outcome.json", QuarantineReason.UNKNOWN_OUTCOME),
        ],
    )
    def test_malformed_records_are_quarantined(self, name, reason):
        result = read_run_file(str(DATA / name))
        assert result.file_quarantined
        assert result.pending == ()
        assert [(q.run_id, q.reason) for q in result.quarantined] == [(None, reason)]
        assert result.quarantined[0].detail


def _runs(out: Path) -> list[Run]:
    frame = pl.read_parquet(out / "runs.parquet")
    return list(from_frame(frame, Run))


@pytest.fixture(scope="module")
def ingested(tmp_path_factory):
    out = tmp_path_factory.mktemp("v5") / "out"
    report = ingest([str(DATA)], str(out), limits=ReadLimits(), shard_bytes=1 << 20, workers=1)
    return report, {run.strategy: run for run in _runs(out)}


class TestChainsThroughIngest:
    def test_report_balances_and_counts(self, ingested):
        report, _ = ingested
        assert report.files_in == 10 == report.files_read + report.files_quarantined
        assert report.files_quarantined == 5
        assert report.runs_in == 2 == sum(report.runs_by_class.values())
        counts = report.counts_of("v5")
        assert counts.records == {
            "special_environment_getter_code": 1,
            "strategy_list": 1,
            "strategy_code": 3,
        }
        assert counts.attempts_missing == 2  # chain A lost attempt 2, chain B attempt 1
        assert counts.chains_by_attempts_missing == {"1": 2}
        assert report.runs_by_reason["inconsistent"] == {"attempts_missing": 1}
        assert report.pairs_by_rule["mixed"] == 1
        assert report.unit_conventions == {UnitConvention.KIB_FREED_V5.value: 2}

    def test_mixed_chain(self, ingested):
        _, runs = ingested
        run = runs["Remove rotated logs in /var/log"]
        assert (run.run_class, run.file_schema, run.attempts_missing) == (
            RunClass.MIXED,
            "v5",
            1,
        )
        assert run.run_id.startswith(f"{PREFIX}#")
        assert [(a.index, a.outcome) for a in run.attempts] == [(0, F), (2, S)]
        assert run.space_freed_bytes == 2048.0 * 1024
        # P_s is the strategy list's prompt, P_c the first present attempt's prompt
        assert [m.content for m in run.strategy_prompt] == [
            "You free disk space.",
            "List strategies.",
        ]
        assert run.code_prompt[-1].content == "Write code for: Remove rotated logs in /var/log"
        assert len(run.code_prompt) == 2
        assert "os.listdir('/var/log')" in run.env_getter_prompt[0].content
        assert run.copy_index == 0

    def test_success_with_lost_failures_is_never_a_first_try(self, ingested):
        _, runs = ingested
        run = runs["Clear the apt cache"]
        assert (run.run_class, run.class_reason) == (RunClass.INCONSISTENT, "attempts_missing")
