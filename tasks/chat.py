"""Chat conversations under a model's own chat template, whatever that template accepts.

AGIR prompts run system, user, user, user, assistant, user... Many templates refuse
that: Mistral-style ones raise on two consecutive user turns, Gemma-style ones raise on
a system message, and a model without a template cannot render a conversation at all.
``template_traits`` finds out what a tokenizer's template accepts by rendering tiny
conversations (once per template), and ``conform_messages`` rewrites a conversation
into a form it accepts: consecutive turns of one role are merged, and the system
message is folded into the first user turn where there is no system role. Both say
what they did, so garbling and training can count it.

Pure Python: no torch, polars or orjson (the training program imports this on GPU
machines that lack them).
"""

from __future__ import annotations

import logging
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass
from enum import StrEnum
from typing import Any

from agir_retrain.tasks.errors import ChatTemplateError

log = logging.getLogger(__name__)


class Role(StrEnum):
    """Who wrote a chat message (``records.py`` re-exports it beside ``Message``)."""

    SYSTEM = "system"
    USER = "user"
    ASSISTANT = "assistant"


# Merged turns and a folded system message are joined by a blank line, as a person would.
TURN_SEPARATOR = "\n\n"
_PROBE = ("agir-probe-a", "agir-probe-b", "agir-probe-system")


@dataclass(frozen=True, slots=True, kw_only=True)
class TemplateTraits:
    """What a chat template accepts, found by rendering tiny conversations."""

    system_role: bool  # a system message renders (and its text appears)
    consecutive_turns: bool  # two user turns in a row render (and both texts appear)

    @property
    def accepts_anything(self) -> bool:
        """Whether every AGIR conversation renders as it is."""
        return self.system_role and self.consecutive_turns


@dataclass(frozen=True, slots=True, kw_only=True)
class Conformed:
    """A conversation rewritten for a template, and what was changed."""

    messages: list[dict[str, str]]
    turns_merged: int  # turns folded into the turn before them (same role)
    system_folded: bool  # the system message became the start of the first user turn

    @property
    def changed(self) -> bool:
        """Whether the conversation differs from the one given."""
        return bool(self.turns_merged) or self.system_folded


@dataclass(frozen=True, slots=True, kw_only=True)
class ConformCounts:
    """What conforming did to a set of conversations (for metrics and reports)."""

    conversations: int = 0
    changed: int = 0
    turns_merged: int = 0
    systems_folded: int = 0


def tally(results: Iterable[Conformed]) -> ConformCounts:
    """Count conversations, changed ones, merged turns and folded system messages."""
    conversations = changed = merged = folded = 0
    for result in results:
        conversations += 1
        changed += result.changed
        merged += result.turns_merged
        folded += result.system_folded
    return ConformCounts(
        conversations=conversations, changed=changed, turns_merged=merged, systems_folded=folded
    )


def conform_messages(messages: Sequence[Mapping[str, str]], traits: TemplateTraits) -> Conformed:
    """Rewrite a conversation into a form the template accepts; say what changed.

    Where the template has no system role, the system messages are folded into the first
    user turn (or become it, when none follows). Where it refuses consecutive turns of one
    role, they are merged into one turn. Contents are joined by a blank line.
    """
    turns = [{"role": m["role"], "content": m["content"]} for m in messages]
    folded = False
    if not traits.system_role and any(t["role"] == "system" for t in turns):
        system = TURN_SEPARATOR.join(t["content"] for t in turns if t["role"] == "system")
        turns = [t for t in turns if t["role"] != "system"]
        first_user = next((i for i, t in enumerate(turns) if t["role"] == "user"), None)
        if first_user is None:
            turns.insert(0, {"role": "user", "content": system})
        else:
            turn = turns[first_user]
            turns[first_user] = {
                "role": "user",
                "content": system + TURN_SEPARATOR + turn["content"],
            }
        folded = True
    merged = 0
    if not traits.consecutive_turns:
        joined: list[dict[str, str]] = []
        for turn in turns:
            if joined and joined[-1]["role"] == turn["role"]:
                previous = joined[-1]
                joined[-1] = {
                    "role": turn["role"],
                    "content": previous["content"] + TURN_SEPARATOR + turn["content"],
                }
                merged += 1
            else:
                joined.append(turn)
        turns = joined
    return Conformed(messages=turns, turns_merged=merged, system_folded=folded)


# Traits by template text: probing renders a few conversations, so do it once per template.
_TRAITS: dict[str, TemplateTraits] = {}


def template_traits(tokenizer: Any) -> TemplateTraits:
    """Probe a tokenizer's chat template with tiny conversations (once per template).

    Raises:
        ChatTemplateError: the tokenizer has no chat template, or its template cannot
            render even one user message.
    """
    template = getattr(tokenizer, "chat_template", None)
    name = getattr(tokenizer, "name_or_path", "") or type(tokenizer).__name__
    if not template:
        raise ChatTemplateError(
            f"{name}: the tokenizer has no chat template, so conversations cannot be rendered; "
            "use the model's chat/instruct variant, give its tokenizer_config.json a "
            "chat_template, or use a dataset of plain strings (prompt/chosen/rejected)"
        )
    key = template if isinstance(template, str) else repr(template)
    if key in _TRAITS:
        return _TRAITS[key]
    a, b, system = _PROBE
    single = _renders(tokenizer, [{"role": "user", "content": a}], (a,))
    if single is not True:
        raise ChatTemplateError(
            f"{name}: the chat template cannot render a single user message ({single}); "
            "fix the template or use a dataset of plain strings"
        )
    traits = TemplateTraits(
        system_role=_renders(
            tokenizer,
            [{"role": "system", "content": system}, {"role": "user", "content": a}],
            (system, a),
        )
        is True,
        consecutive_turns=_renders(
            tokenizer,
            [{"role": "user", "content": a}, {"role": "user", "content": b}],
            (a, b),
        )
        is True,
    )
    if not traits.accepts_anything:
        log.info(
            "%s: chat template %s; conversations are conformed to it",
            name,
            ", ".join(
                text
                for text, missing in (
                    (
                        "has no system role (folded into the first user turn)",
                        not traits.system_role,
                    ),
                    ("refuses consecutive turns (merged)", not traits.consecutive_turns),
                )
                if missing
            ),
        )
    _TRAITS[key] = traits
    return traits


def _renders(tokenizer: Any, messages: list[dict[str, str]], texts: Sequence[str]) -> bool | str:
    """True if the conversation renders with every text in it; else why not."""
    try:
        rendered = tokenizer.apply_chat_template(
            messages, add_generation_prompt=True, tokenize=False
        )
    except Exception as error:  # noqa: BLE001 - a template may raise anything (raise_exception, TypeError, ...)
        return f"{type(error).__name__}: {error}"
    missing = [text for text in texts if text not in rendered]
    return True if not missing else f"drops {missing}"


def render_prompt(tokenizer: Any, messages: Sequence[Mapping[str, str]]) -> str:
    """Render a conversation for generation under the tokenizer's template, conformed to it."""
    conformed = conform_messages(messages, template_traits(tokenizer))
    return tokenizer.apply_chat_template(
        conformed.messages, add_generation_prompt=True, tokenize=False
    )


def trim_message(content: str, max_chars: int) -> str:
    """Keep the start and end of an over-long message, saying how much was cut."""
    if len(content) <= max_chars:
        return content
    half = max_chars // 2
    tail = content[len(content) - half :]  # not content[-half:]: that is everything when half == 0
    return f"{content[:half]}\n[... {len(content) - 2 * half} characters cut ...]\n{tail}"
