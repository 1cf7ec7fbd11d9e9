"""Conversations under real kinds of chat templates: probed, conformed, rendered, garbled."""

from __future__ import annotations

import pytest

from agir_retrain.tasks.chat import (
    Conformed,
    TemplateTraits,
    conform_messages,
    render_prompt,
    tally,
    template_traits,
)
from agir_retrain.tasks.errors import ChatTemplateError

# The shape of an AGIR code prompt: system, three user turns, the strategies, the request.
AGIR = [
    {"role": "system", "content": "S"},
    {"role": "user", "content": "U1"},
    {"role": "user", "content": "U2"},
    {"role": "user", "content": "U3"},
    {"role": "assistant", "content": "A"},
    {"role": "user", "content": "U4"},
]
EVERYTHING = TemplateTraits(system_role=True, consecutive_turns=True)
NO_SYSTEM = TemplateTraits(system_role=False, consecutive_turns=True)
ALTERNATING = TemplateTraits(system_role=True, consecutive_turns=False)
STRICT = TemplateTraits(system_role=False, consecutive_turns=False)


class TestConform:
    def test_a_permissive_template_keeps_the_conversation(self):
        assert conform_messages(AGIR, EVERYTHING) == Conformed(
            messages=AGIR, turns_merged=0, system_folded=False
        )

    def test_consecutive_user_turns_are_merged(self):
        result = conform_messages(AGIR, ALTERNATING)
        assert result.messages == [
            {"role": "system", "content": "S"},
            {"role": "user", "content": "U1\n\nU2\n\nU3"},  # three turns -> one: two merged
            {"role": "assistant", "content": "A"},
            {"role": "user", "content": "U4"},
        ]
        assert (result.turns_merged, result.system_folded, result.changed) == (2, False, True)

    def test_the_system_message_is_folded_into_the_first_user_turn(self):
        result = conform_messages(AGIR, NO_SYSTEM)
        assert result.messages == [
            {"role": "user", "content": "S\n\nU1"},
            {"role": "user", "content": "U2"},
            {"role": "user", "content": "U3"},
            {"role": "assistant", "content": "A"},
            {"role": "user", "content": "U4"},
        ]
        assert (result.turns_merged, result.system_folded) == (0, True)

    def test_strict_templates_get_both(self):
        result = conform_messages(AGIR, STRICT)
        assert [m["role"] for m in result.messages] == ["user", "assistant", "user"]
        assert result.messages[0]["content"] == "S\n\nU1\n\nU2\n\nU3"
        assert (result.turns_merged, result.system_folded) == (2, True)

    def test_a_lone_system_message_becomes_the_user_turn(self):
        result = conform_messages([{"role": "system", "content": "S"}], STRICT)
        assert result.messages == [{"role": "user", "content": "S"}]

    def test_the_input_is_not_changed(self):
        given = [dict(m) for m in AGIR]
        conform_messages(given, STRICT)
        assert given == AGIR

    def test_tally(self):
        counts = tally(conform_messages(c, STRICT) for c in (AGIR, AGIR[1:2], AGIR[:2]))
        # AGIR: 2 merged + folded; [user]: unchanged; [system, user]: folded
        assert (
            counts.conversations,
            counts.changed,
            counts.turns_merged,
            counts.systems_folded,
        ) == (
            3,
            2,
            2,
            2,
        )


@pytest.fixture(scope="module")
def tokenizers(tmp_path_factory):
    """One tiny model per kind of template, with the architecture that usually carries it."""
    from transformers import AutoTokenizer

    from agir_retrain.tasks.synth.tiny_model import make_tiny_model

    made = {}
    for template, architecture in (
        ("plain", "llama"),
        ("chatml", "qwen2"),
        ("mistral", "mistral"),
        ("gemma", "llama"),
        ("none", "llama"),
    ):
        folder = make_tiny_model(
            tmp_path_factory.mktemp(template),
            architecture=architecture,
            chat_template=template,
            hidden_size=32,
            layers=1,
        )
        made[template] = (str(folder), AutoTokenizer.from_pretrained(folder))
    return made


@pytest.mark.slow  # five tiny models are made (a tokenizer trained for each)
class TestTemplates:
    @pytest.mark.parametrize(
        ("template", "traits"),
        [
            ("plain", EVERYTHING),
            ("chatml", EVERYTHING),
            ("mistral", ALTERNATING),
            ("gemma", STRICT),
        ],
    )
    def test_traits_are_probed(self, tokenizers, template, traits):
        assert template_traits(tokenizers[template][1]) == traits

    @pytest.mark.parametrize("template", ["mistral", "gemma"])
    def test_the_raw_conversation_raises_and_the_conformed_one_renders(self, tokenizers, template):
        tokenizer = tokenizers[template][1]
        with pytest.raises(Exception, match=r"not supported|must alternate"):
            tokenizer.apply_chat_template(AGIR, add_generation_prompt=True, tokenize=False)
        rendered = render_prompt(tokenizer, AGIR)
        positions = [rendered.index(text) for text in ("S", "U1", "U2", "U3", "A", "U4")]
        assert positions == sorted(positions)  # every message kept, in order

    def test_no_template_is_a_clear_error(self, tokenizers):
        with pytest.raises(ChatTemplateError, match="has no chat template"):
            template_traits(tokenizers["none"][1])

    def test_garbling_renders_agir_prompts_under_a_strict_template(self, tokenizers):
        from agir_retrain.tasks.dataset.garble import Garbler
        from agir_retrain.tasks.records import GarbleRequest, Message, PromptKind, Role
        from agir_retrain.tasks.settings.models import GarbleSettings

        garbler = Garbler(
            tokenizers["gemma"][0],
            GarbleSettings(load_in_4bit=False, gpus_per_actor=0, max_new_tokens=4),
        )
        request = GarbleRequest(
            run_id="r#0",
            prompt_kind=PromptKind.CODE,
            prompt=tuple(Message(role=Role(m["role"]), content=m["content"]) for m in AGIR),
            chosen="print('freed')",
        )
        (result,) = garbler.garble([request])
        assert result.rejected.strip()
