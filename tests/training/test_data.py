"""Training data: any DPO JSONL, checked row by row before a model exists, fitted to the budget."""

from __future__ import annotations

import json

import pytest

from agir_retrain.tasks.errors import DatasetError
from agir_retrain.tasks.training.data import (
    explicit_prompt,
    fit_rows,
    load_rows,
    locate,
    row_format,
)


def _write(path, rows):
    path.write_text("".join(json.dumps(r) + "\n" for r in rows))
    return str(path)


CONVERSATIONAL = {
    "prompt": [{"role": "user", "content": "free some space"}],
    "chosen": [{"role": "assistant", "content": "rm -rf /tmp/cache"}],
    "rejected": [{"role": "assistant", "content": "sudo reboot"}],
}
STANDARD = {"prompt": "free some space", "chosen": "rm -rf /tmp/cache", "rejected": "sudo reboot"}


class TestLocate:
    def test_folder_layouts(self, tmp_path):
        (tmp_path / "dpo").mkdir()
        _write(tmp_path / "dpo" / "train.jsonl", [CONVERSATIONAL])
        _write(tmp_path / "dpo" / "eval.jsonl", [CONVERSATIONAL])
        files = locate(str(tmp_path))
        assert (files.train, files.eval) == (
            str(tmp_path / "dpo" / "train.jsonl"),
            str(tmp_path / "dpo" / "eval.jsonl"),
        )

    def test_single_file_and_explicit_eval(self, tmp_path):
        train = _write(tmp_path / "mine.jsonl", [STANDARD])
        other = _write(tmp_path / "held_out.jsonl", [STANDARD])
        assert locate(train).eval is None
        assert locate(train, other).eval == other

    def test_nothing_there(self, tmp_path):
        with pytest.raises(DatasetError, match="no training file"):
            locate(str(tmp_path))


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
            (["just a string"], "must be a JSON object"),
        ],
    )
    def test_bad_rows_name_the_line_and_the_problem(self, tmp_path, rows, message):
        path = _write(tmp_path / "bad.jsonl", rows)
        with pytest.raises(DatasetError, match=message):
            load_rows(path)

    def test_not_json(self, tmp_path):
        (tmp_path / "x.jsonl").write_text(json.dumps(STANDARD) + "\n{oops\n")
        with pytest.raises(DatasetError, match="line 2: not JSON"):
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


class TestFit:
    def test_long_prompts_are_shortened_keeping_the_request(self, tiny_model):
        from transformers import AutoTokenizer

        tokenizer = AutoTokenizer.from_pretrained(tiny_model)
        listing = "\n".join(f"{i} /var/log/file{i}.log" for i in range(3000))
        row = {
            "prompt": [
                {"role": "system", "content": "You are an agent."},
                {"role": "user", "content": listing},
                {
                    "role": "user",
                    "content": 'generate Python code to complete the following task: "clean logs".',
                },
            ],
            "chosen": [{"role": "assistant", "content": "print(1)"}],
            "rejected": [{"role": "assistant", "content": "print(2)"}],
        }
        fitted, stats = fit_rows([row, CONVERSATIONAL], tokenizer, 256)
        assert (stats.rows_in, stats.rows_trimmed, stats.rows_dropped, stats.rows_out) == (
            2,
            1,
            0,
            2,
        )
        prompt = fitted[0]["prompt"]
        assert prompt[-1] == row["prompt"][-1]  # the request survives whole
        assert "characters cut" in prompt[1]["content"]
        rendered = tokenizer.apply_chat_template(prompt, add_generation_prompt=True, tokenize=False)
        assert len(tokenizer(rendered)["input_ids"]) <= 256 - 8
        assert fitted[1] == CONVERSATIONAL

    def test_row_whose_completion_alone_is_too_long_is_dropped_and_counted(self, tiny_model):
        from transformers import AutoTokenizer

        tokenizer = AutoTokenizer.from_pretrained(tiny_model)
        row = dict(CONVERSATIONAL, chosen=[{"role": "assistant", "content": "word " * 400}])
        fitted, stats = fit_rows([row], tokenizer, 128)
        assert (fitted, stats.rows_dropped) == ([], 1)
        assert "completion" in stats.dropped_examples[0]


AGIR_ROW = {
    "prompt": [
        {"role": "system", "content": "S"},
        {"role": "user", "content": "U1"},
        {"role": "user", "content": "U2"},
    ],
    "chosen": [{"role": "assistant", "content": "good"}],
    "rejected": [{"role": "assistant", "content": "bad"}],
    "garbled": True,
}


class TestConformRows:
    def test_prompts_are_conformed_and_counted_completions_kept(self):
        from agir_retrain.tasks.chat import TemplateTraits
        from agir_retrain.tasks.training.data import conform_rows

        strict = TemplateTraits(system_role=False, consecutive_turns=False)
        rows, counts = conform_rows([AGIR_ROW, STANDARD], strict)
        assert rows[0] == {
            **AGIR_ROW,
            "prompt": [{"role": "user", "content": "S\n\nU1\n\nU2"}],
        }
        assert rows[1] == STANDARD  # strings have no turns to conform
        assert (
            counts.conversations,
            counts.changed,
            counts.turns_merged,
            counts.systems_folded,
        ) == (
            1,
            1,
            1,
            1,
        )

    def test_a_prompt_ending_where_the_completion_starts_is_refused_under_alternation(self):
        from agir_retrain.tasks.chat import TemplateTraits
        from agir_retrain.tasks.training.data import conform_rows

        row = dict(
            AGIR_ROW,
            prompt=[*AGIR_ROW["prompt"], {"role": "assistant", "content": "prefill"}],
        )
        alternating = TemplateTraits(system_role=True, consecutive_turns=False)
        with pytest.raises(DatasetError, match="row 1: the prompt ends with a assistant turn"):
            conform_rows([row], alternating)


def test_nan_is_not_json(tmp_path):
    (tmp_path / "x.jsonl").write_text('{"prompt": "p", "chosen": "c", "rejected": NaN}\n')
    with pytest.raises(DatasetError, match="line 1: not JSON"):
        load_rows(str(tmp_path / "x.jsonl"))
