"""Preference rows: any DPO-style JSONL, checked row by row before a model exists."""

from __future__ import annotations

import json

import pytest

from agir_retrain.tasks.errors import DatasetError
from agir_retrain.tasks.training.preference import explicit_prompt, load_rows, row_format


def _write(path, rows):
    path.write_text("".join(json.dumps(r) + "\n" for r in rows))
    return str(path)


CONVERSATIONAL = {
    "prompt": [{"role": "user", "content": "free some space"}],
    "chosen": [{"role": "assistant", "content": "rm -rf /tmp/cache"}],
    "rejected": [{"role": "assistant", "content": "sudo reboot"}],
}
STANDARD = {"prompt": "free some space", "chosen": "rm -rf /tmp/cache", "rejected": "sudo reboot"}


class TestLoadRows:
    def test_formats(self, tmp_path):
        assert (
            row_format(load_rows(_write(tmp_path / "a.jsonl", [CONVERSATIONAL]))[0])
            == "conversational"
        )
        assert row_format(load_rows(_write(tmp_path / "b.jsonl", [STANDARD]))[0]) == "standard"

    @pytest.mark.parametrize(
        ("rows", "message"),
        [
            ([], "no rows"),
            ([{"prompt": "p", "chosen": "c"}], r"missing column\(s\) \['rejected'\]"),
            (
                [{"prompt": "p", "chosen": 3, "rejected": "r"}],
                r"\['chosen'\] must be a string or a list",
            ),
            (
                [{"prompt": "p", "chosen": [{"role": "assistant"}], "rejected": "r"}],
                "must be a string or a list",
            ),
            (
                [
                    {
                        "prompt": "p",
                        "chosen": [{"role": "assistant", "content": "c"}],
                        "rejected": "r",
                    }
                ],
                "mix strings",
            ),
            ([{"chosen": "c", "rejected": "r"}], "string rows need a prompt"),
            ([STANDARD, CONVERSATIONAL], "mix formats"),
            (["just a string"], "expected a JSON object"),
        ],
    )
    def test_bad_rows_name_the_line_and_the_problem(self, tmp_path, rows, message):
        path = _write(tmp_path / "bad.jsonl", rows)
        with pytest.raises(DatasetError, match=message):
            load_rows(path)

    def test_not_json(self, tmp_path):
        (tmp_path / "x.jsonl").write_text(json.dumps(STANDARD) + "\n{oops\n")
        with pytest.raises(DatasetError, match=r"x\.jsonl:2: not valid JSON"):
            load_rows(str(tmp_path / "x.jsonl"))


def test_implicit_prompt_is_made_explicit():
    row = {
        "chosen": [{"role": "user", "content": "q"}, {"role": "assistant", "content": "good"}],
        "rejected": [{"role": "user", "content": "q"}, {"role": "assistant", "content": "bad"}],
    }
    assert explicit_prompt(row) == {
        "prompt": [{"role": "user", "content": "q"}],
        "chosen": [{"role": "assistant", "content": "good"}],
        "rejected": [{"role": "assistant", "content": "bad"}],
    }


def test_nan_is_not_json(tmp_path):
    (tmp_path / "x.jsonl").write_text('{"prompt": "p", "chosen": "c", "rejected": NaN}\n')
    with pytest.raises(DatasetError, match=r"x\.jsonl:1: not valid JSON"):
        load_rows(str(tmp_path / "x.jsonl"))
