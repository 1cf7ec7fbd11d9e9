"""The reader: one handmade file per quirk of the run format, and never a crash."""

from __future__ import annotations

import json
import math

import pytest
import xxhash
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from agir_retrain.tasks.records import (
    Outcome,
    QuarantineReason,
    Role,
    RunClass,
    UnitConvention,
)
from agir_retrain.tasks.runs.reader import ReadLimits, parse_json, read_run_file
from agir_retrain.tasks.runs.scoring import KIB, MIB
from agir_retrain.tasks.runs.text import extract_code


def _name(run_id: str | None) -> str | None:
    """A run id without its content digest: ``<file stem>#<copy index>``."""
    return None if run_id is None else run_id.partition("@")[0]


class TestRunIds:
    def test_a_run_id_names_the_file_stem_the_copy_and_the_content(self, data_file):
        data = open(data_file("v4_kib.json"), "rb").read()
        digest = xxhash.xxh3_128_hexdigest(data)[:10]
        runs = read_run_file("/machine-a/v4_kib.json", data).runs
        assert [r.run_id for r in runs] == [f"v4_kib#{i}@{digest}" for i in range(4)]
        # The same bytes elsewhere (another folder, another machine) give the same ids.
        assert [r.run_id for r in read_run_file("s3://b/x/v4_kib.json", data).runs] == [
            r.run_id for r in runs
        ]

    def test_files_named_alike_with_other_content_get_other_ids(self, data_file):
        data = open(data_file("v4_kib.json"), "rb").read()
        other = data.replace(b"2048.0", b"4096.0")
        first = {r.run_id for r in read_run_file("/a/v4_kib.json", data).runs}
        second = {r.run_id for r in read_run_file("/b/v4_kib.json", other).runs}
        assert not first & second
        assert {_name(i) for i in first} == {_name(i) for i in second}


class TestReadV4:
    def test_one_run_of_each_class(self, data_file):
        result = read_run_file(data_file("v4_kib.json"))
        assert not result.quarantined
        assert [(_name(r.run_id), r.run_class) for r in result.runs] == [
            ("v4_kib#0", RunClass.FIRST_TRY),
            ("v4_kib#1", RunClass.MIXED),
            ("v4_kib#2", RunClass.NEVER_FREED),
            ("v4_kib#3", RunClass.NO_RUNNABLE),
        ]
        assert result.runs_found == 4

    def test_kib_new_minus_old_becomes_bytes(self, data_file):
        first, mixed, *_ = read_run_file(data_file("v4_kib.json")).runs
        assert first.unit_convention is UnitConvention.KIB_NEW_MINUS_OLD
        assert first.space_freed_raw == 2048.0
        assert first.space_freed_bytes == 2048 * KIB
        assert mixed.space_freed_bytes == 512 * KIB
        assert first.model_name == "qwen"
        assert first.file_schema == "v4"

    def test_attempts_in_order_with_outcome_and_code(self, data_file):
        mixed = read_run_file(data_file("v4_kib.json")).runs[1]
        assert [a.outcome for a in mixed.attempts] == [
            Outcome.AST_FAIL,
            Outcome.DELETION_FAIL,
            Outcome.SUCCESS,
        ]
        assert [a.index for a in mixed.attempts] == [0, 1, 2]
        success = mixed.attempts[-1]
        assert success.message.startswith("```python\n")
        assert success.message.endswith("\n```")
        assert success.code == "import os\nos.remove('/var/log/syslog.1')\nprint('freed')\n"

    def test_strategy_prompt_ends_at_first_strategy_request(self, data_file):
        run = read_run_file(data_file("v4_kib.json")).runs[0]
        assert [m.role for m in run.strategy_prompt] == [
            Role.SYSTEM,
            Role.USER,
            Role.USER,
            Role.USER,
        ]
        assert run.strategy_prompt[-1].content == "List strategies to free up storage space."

    def test_code_prompt_ends_with_the_code_request_quoting_the_strategy(self, data_file):
        run = read_run_file(data_file("v4_kib.json")).runs[1]
        assert run.code_prompt[: len(run.strategy_prompt)] == run.strategy_prompt
        assert run.code_prompt[-1].role is Role.USER
        assert f'"{run.strategy}"' in run.code_prompt[-1].content
        # system, two env blocks, request, failed reply, regen, reply, code request
        assert len(run.code_prompt) == 8

    def test_env_getter_prompt_holds_the_getter_codes(self, data_file):
        run = read_run_file(data_file("v4_kib.json")).runs[0]
        assert run.env_getter_prompt[0].role is Role.USER
        assert "os.listdir('/var/log')" in run.env_getter_prompt[0].content

    def test_duplicated_strategy_block_is_kept_once(self, data_file):
        document = json.loads(open(data_file("v4_kib.json")).read())
        copy = document["copy_strat_agents"][0]
        history = copy["tagged_chat_history"]
        block = history[3:7]  # request, failed reply, regen, reply
        copy["tagged_chat_history"] = history[:7] + block + history[7:]
        data = json.dumps(document).encode()
        doubled = read_run_file("doubled.json", data).runs[0]
        original = read_run_file(data_file("v4_kib.json")).runs[0]
        assert doubled.code_prompt == original.code_prompt

    def test_two_matching_turns_are_not_a_repeated_block(self, data_file):
        document = json.loads(open(data_file("v4_kib.json")).read())
        history = document["copy_strat_agents"][0]["tagged_chat_history"]
        history.insert(7, history[6])  # the final reply twice, not the whole block
        run = read_run_file("twice.json", json.dumps(document).encode()).runs[0]
        assert len(run.code_prompt) == 9


class TestUnitsAndSign:
    def test_pre_model_name_files_are_mib_with_the_sign_reversed(self, data_file):
        freed, used, untagged = read_run_file(data_file("v4_mib_reversed.json")).runs
        assert freed.unit_convention is UnitConvention.MIB_OLD_MINUS_NEW
        assert freed.space_freed_bytes == 3 * MIB
        assert freed.run_class is RunClass.FIRST_TRY
        assert used.space_freed_bytes == -120 * MIB
        assert (used.run_class, used.class_reason) == (
            RunClass.INCONSISTENT,
            "success_without_space_freed",
        )
        assert (untagged.run_class, untagged.class_reason) == (
            RunClass.INCONSISTENT,
            "space_freed_without_success",
        )

    def test_success_with_no_space_freed_is_reported_not_trusted(self, data_file):
        zero, good = read_run_file(data_file("success_no_space.json")).runs
        assert zero.run_class is RunClass.INCONSISTENT
        assert zero.class_reason == "success_without_space_freed"
        assert good.run_class is RunClass.FIRST_TRY


class TestLegacy:
    def test_2024_12_file_reads_with_its_own_tags(self, data_file):
        result = read_run_file(data_file("legacy_2024_12.json"))
        mixed, no_runnable = result.runs
        assert mixed.file_schema == "legacy_2024_12"
        assert [a.outcome for a in mixed.attempts] == [Outcome.COMPILE_FAIL, Outcome.SUCCESS]
        assert mixed.strategy_prompt[-1].content.startswith("Generate a few specific")
        assert no_runnable.run_class is RunClass.NO_RUNNABLE

    def test_file_total_goes_to_the_only_run_that_ran_code(self, data_file):
        mixed, no_runnable = read_run_file(data_file("legacy_2024_12.json")).runs
        assert mixed.space_freed_raw == -2.0
        assert mixed.space_freed_bytes == 2 * MIB
        assert mixed.run_class is RunClass.MIXED
        assert no_runnable.space_freed_raw == 0.0

    def test_total_shared_by_several_runs_is_unknown(self, data_file):
        document = json.loads(open(data_file("legacy_2024_12.json")).read())
        document["strat_agents"].append(document["strat_agents"][0])
        runs = read_run_file("shared.json", json.dumps(document).encode()).runs
        assert runs[0].space_freed_raw is None
        assert (runs[0].run_class, runs[0].class_reason) == (
            RunClass.INCONSISTENT,
            "space_freed_unknown",
        )


class TestQuarantine:
    @pytest.mark.parametrize(
        ("name", "reason"),
        [
            ("truncated.json", QuarantineReason.TRUNCATED_JSON),
            ("not_utf8.json", QuarantineReason.NOT_UTF8),
            ("empty.json", QuarantineReason.EMPTY_FILE),
            ("top_level_array.json", QuarantineReason.NOT_AN_OBJECT),
        ],
    )
    def test_whole_file(self, data_file, name, reason):
        result = read_run_file(data_file(name))
        assert result.file_quarantined
        assert [(q.run_id, q.reason) for q in result.quarantined] == [(None, reason)]
        assert result.quarantined[0].detail
        assert result.runs == ()

    def test_bad_runs_are_quarantined_and_the_good_run_kept(self, data_file):
        result = read_run_file(data_file("bad_runs.json"))
        assert not result.file_quarantined
        assert [_name(r.run_id) for r in result.runs] == ["bad_runs#0"]
        assert [(_name(q.run_id), q.reason) for q in result.quarantined] == [
            ("bad_runs#1", QuarantineReason.BAD_HISTORY_ENTRY),
            ("bad_runs#2", QuarantineReason.BAD_MESSAGE),
            ("bad_runs#3", QuarantineReason.UNKNOWN_OUTCOME),
            ("bad_runs#4", QuarantineReason.MISSING_KEY),
            ("bad_runs#5", QuarantineReason.WRONG_TYPE),
            ("bad_runs#6", QuarantineReason.WRONG_TYPE),
        ]
        assert result.runs_found == 7

    def test_nan_figure_quarantines_only_its_run(self, data_file):
        result = read_run_file(data_file("nan_space_freed.json"))
        assert [_name(r.run_id) for r in result.runs] == ["nan_space_freed#0"]
        assert [(_name(q.run_id), q.reason) for q in result.quarantined] == [
            ("nan_space_freed#1", QuarantineReason.NON_FINITE_NUMBER)
        ]

    def test_figures_that_overflow_quarantine_only_their_run(self, data_file):
        # 1e308 KiB is finite, but not in bytes; 10**400 is not even a float. Each of those
        # runs is quarantined with the reason, and the file's other runs are kept.
        document = json.loads(open(data_file("v4_kib.json")).read())
        document["copy_strat_agents"][0]["space_freed"] = 1e308
        text = json.dumps(document).replace(
            '"space_freed": 512.0', '"space_freed": 1' + "0" * 400, 1
        )
        result = read_run_file("huge.json", text.encode())
        assert [(_name(q.run_id), q.reason) for q in result.quarantined] == [
            ("huge#0", QuarantineReason.NON_FINITE_NUMBER),
            ("huge#1", QuarantineReason.NON_FINITE_NUMBER),
        ]
        assert "bytes" in result.quarantined[0].detail
        assert [_name(r.run_id) for r in result.runs] == ["huge#2", "huge#3"]
        assert all(math.isfinite(r.space_freed_bytes) for r in result.runs)
        assert result.runs_found == 4

    @pytest.mark.parametrize("total", ["1e308", "1" + "0" * 400])
    def test_legacy_total_that_overflows_quarantines_the_run_it_belongs_to(self, data_file, total):
        document = json.loads(open(data_file("legacy_2024_12.json")).read())
        text = json.dumps(document).replace('"space_freed": -2.0', f'"space_freed": {total}')
        result = read_run_file("legacy.json", text.encode())
        assert [(_name(q.run_id), q.reason) for q in result.quarantined] == [
            ("legacy#0", QuarantineReason.NON_FINITE_NUMBER)
        ]
        assert [_name(r.run_id) for r in result.runs] == ["legacy#1"]

    def test_message_over_the_limit(self, data_file):
        result = read_run_file(data_file("v4_kib.json"), limits=ReadLimits(max_message_chars=100))
        assert result.runs == ()
        assert {q.reason for q in result.quarantined} == {QuarantineReason.MESSAGE_TOO_LARGE}
        assert len(result.quarantined) == 4

    def test_file_over_the_limit(self, data_file):
        result = read_run_file(data_file("v4_kib.json"), limits=ReadLimits(max_file_bytes=1000))
        assert result.quarantined[0].reason is QuarantineReason.FILE_TOO_LARGE

    def test_missing_file_is_a_read_error(self, tmp_path):
        result = read_run_file(str(tmp_path / "nope.json"))
        assert result.quarantined[0].reason is QuarantineReason.READ_ERROR

    def test_unknown_schema_names_the_keys_it_saw(self):
        result = read_run_file("other.json", b'{"agent": 1, "runs": []}')
        entry = result.quarantined[0]
        assert entry.reason is QuarantineReason.UNKNOWN_SCHEMA
        assert "agent, runs" in entry.detail

    def test_zero_run_file_is_read_not_quarantined(self, data_file):
        result = read_run_file(data_file("zero_runs.json"))
        assert not result.file_quarantined
        assert (result.runs, result.quarantined, result.runs_found) == ((), (), 0)


class TestParsing:
    def test_lone_surrogate_escape_becomes_replacement_character(self, data_file):
        run = read_run_file(data_file("lone_surrogate.json")).runs[0]
        assert "\ufffd" in run.attempts[0].message
        run.attempts[0].message.encode("utf-8")  # writable as UTF-8

    def test_nan_parses_through_the_fallback(self):
        assert math.isnan(parse_json("x", b'{"a": NaN}')["a"])

    @pytest.mark.parametrize(
        ("tag", "outcome"),
        [
            ("genned_strat_code(success)", Outcome.SUCCESS),
            ("genned_strat_code(deletion_fail)", Outcome.DELETION_FAIL),
            ("strat_codegen(ast_fail)", Outcome.AST_FAIL),
            ("genned_strat_code(qwen)(container_fail)", Outcome.CONTAINER_FAIL),
            ("genned_strat_code( compile_fail )", Outcome.COMPILE_FAIL),
        ],
    )
    def test_code_attempt_tags_match_on_their_base(self, data_file, tag, outcome):
        document = json.loads(open(data_file("v4_kib.json")).read())
        document["copy_strat_agents"][0]["tagged_chat_history"][-1][1] = tag
        run = read_run_file("tag.json", json.dumps(document).encode()).runs[0]
        assert run.attempts[0].outcome is outcome

    @pytest.mark.parametrize(
        "tag", ["get_strats_req_plist(deepseek)", "get_strats_req_plist", "get_strat_req_plist"]
    )
    def test_strategy_request_tags_match_whatever_the_suffix(self, data_file, tag):
        document = json.loads(open(data_file("v4_kib.json")).read())
        document["copy_strat_agents"][0]["tagged_chat_history"][3][1] = tag
        run = read_run_file("tag.json", json.dumps(document).encode()).runs[0]
        assert len(run.strategy_prompt) == 4

    def test_extract_code(self):
        assert extract_code("```python\nprint(1)\n```") == "print(1)\n"
        assert extract_code("text\n```py\nx = 2\n```\nmore") == "x = 2\n"
        assert extract_code("no fence") is None


json_values = st.recursive(
    st.none() | st.booleans() | st.floats(allow_nan=False) | st.integers() | st.text(),
    lambda children: (
        st.lists(children, max_size=4) | st.dictionaries(st.text(max_size=20), children, max_size=4)
    ),
    max_leaves=30,
)
run_file_keys = st.sampled_from(
    ["main_strat_agent", "copy_strat_agents", "strat_agents", "env_agent", "space_freed"]
)


class TestNeverRaises:
    @given(st.binary(max_size=2000))
    @settings(max_examples=300, deadline=None)
    def test_arbitrary_bytes(self, data):
        result = read_run_file("fuzz.json", data)
        assert result.file_quarantined or result.runs_found == len(result.runs) + len(
            result.quarantined
        )

    @given(json_values)
    @settings(max_examples=300, deadline=None)
    def test_arbitrary_json(self, value):
        result = read_run_file("fuzz.json", json.dumps(value).encode())
        assert result.runs_found == len(result.runs) + sum(
            q.run_id is not None for q in result.quarantined
        )

    @given(st.dictionaries(run_file_keys, json_values, max_size=5))
    @settings(max_examples=300, deadline=None)
    def test_run_file_shaped_json(self, value):
        result = read_run_file("fuzz.json", json.dumps(value).encode())
        assert result.runs_found == len(result.runs) + sum(
            q.run_id is not None for q in result.quarantined
        )

    @given(data=st.data())
    @settings(max_examples=200, deadline=None, suppress_health_check=[HealthCheck.too_slow])
    def test_a_real_file_with_one_value_replaced(self, data_file, data):
        document = json.loads(open(data_file("v4_kib.json")).read())
        node = document
        while isinstance(node, dict | list) and node:
            keys = list(node) if isinstance(node, dict) else list(range(len(node)))
            key = data.draw(st.sampled_from(keys))
            if not isinstance(node[key], dict | list) or data.draw(st.booleans()):
                node[key] = data.draw(json_values)
                break
            node = node[key]
        result = read_run_file("mutated.json", json.dumps(document).encode())
        assert result.runs_found == len(result.runs) + sum(
            q.run_id is not None for q in result.quarantined
        )
