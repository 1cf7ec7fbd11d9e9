"""Fitting rows to a tokenizer: conversations conformed to its template, prompts to the budget."""

from __future__ import annotations

import pytest

from agir_retrain.tasks.errors import DatasetError
from agir_retrain.tasks.training.fitting import fit_rows

CONVERSATIONAL = {
    "prompt": [{"role": "user", "content": "free some space"}],
    "chosen": [{"role": "assistant", "content": "rm -rf /tmp/cache"}],
    "rejected": [{"role": "assistant", "content": "sudo reboot"}],
}
STANDARD = {"prompt": "free some space", "chosen": "rm -rf /tmp/cache", "rejected": "sudo reboot"}


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
        from agir_retrain.tasks.training.fitting import conform_rows

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
        from agir_retrain.tasks.training.fitting import conform_rows

        row = dict(
            AGIR_ROW,
            prompt=[*AGIR_ROW["prompt"], {"role": "assistant", "content": "prefill"}],
        )
        alternating = TemplateTraits(system_role=True, consecutive_turns=False)
        with pytest.raises(DatasetError, match="row 1: the prompt ends with a assistant turn"):
            conform_rows([row], alternating)
