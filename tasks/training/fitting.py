"""Fit rows to the tokenizer: conform conversations to its chat template, fit the token budget.

Rows longer than the budget are fitted here rather than by TRL, which (1.16) drops a row
whose prompt alone fills ``max_length``: the middle of the longest prompt messages is cut
(container listings, mostly) until the row fits, and rows that cannot fit are dropped.
Every trim and drop is counted. Rows are in the preference shape (``chosen``/``rejected``);
completion and prompt-only rows come through a pair view (``completions.as_pairs``).
"""

from __future__ import annotations

import logging
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any

from agir_retrain.tasks.chat import (
    ConformCounts,
    TemplateTraits,
    conform_messages,
    tally,
    trim_message,
)
from agir_retrain.tasks.errors import DatasetError
from agir_retrain.tasks.training.preference import explicit_prompt, row_format

log = logging.getLogger(__name__)

# A row keeps at least this many prompt tokens; a row whose completion leaves less is dropped.
MIN_PROMPT_TOKENS = 16


@dataclass(slots=True, kw_only=True)
class FitStats:
    """What fitting did to one split."""

    rows_in: int = 0
    rows_trimmed: int = 0
    rows_dropped: int = 0
    rows_out: int = 0
    dropped_examples: list[str] = field(default_factory=list)  # a few row numbers, for the log


def conform_rows(
    rows: Sequence[dict[str, Any]], traits: TemplateTraits
) -> tuple[list[dict[str, Any]], ConformCounts]:
    """Conform every conversational row to the chat template; count what changed.

    The prompt is conformed on its own, and so is each completion, so the boundary
    between them stays where it was. A completion that starts with the role the prompt
    ends with cannot be rendered by a template that refuses consecutive turns.
    """
    conformed, results = [], []
    for number, row in enumerate(rows, start=1):
        row = explicit_prompt(row)
        if row_format(row) == "standard":
            conformed.append(row)
            continue
        prompt = conform_messages(row["prompt"], traits)
        results.append(prompt)
        fixed = {**row, "prompt": prompt.messages}
        for side in ("chosen", "rejected"):
            completion = conform_messages(row[side], traits)
            if (
                not traits.consecutive_turns
                and prompt.messages
                and prompt.messages[-1]["role"] == completion.messages[0]["role"]
            ):
                raise DatasetError(
                    f"row {number}: the prompt ends with a {prompt.messages[-1]['role']} turn and "
                    f"{side} starts with one, which this chat template refuses (it needs "
                    "alternating turns); end prompts with a user turn"
                )
            fixed[side] = completion.messages
        conformed.append(fixed)
    counts = tally(results)
    if counts.changed:
        log.info(
            "chat template: %d of %d prompts conformed (%d turns merged, %d system messages folded)",
            counts.changed, counts.conversations, counts.turns_merged, counts.systems_folded,
        )  # fmt: skip
    return conformed, counts


def fit_rows(
    rows: Sequence[dict[str, Any]], tokenizer: Any, max_length: int
) -> tuple[list[dict[str, Any]], FitStats]:
    """Shorten over-long prompts so prompt + longest completion fits ``max_length`` tokens."""
    stats = FitStats(rows_in=len(rows))
    fitted = []
    for number, row in enumerate(rows, start=1):
        row = explicit_prompt(row)
        completion = max(
            _completion_tokens(tokenizer, row["chosen"]),
            _completion_tokens(tokenizer, row["rejected"]),
        )
        budget = max_length - completion
        if budget < MIN_PROMPT_TOKENS:
            stats.rows_dropped += 1
            if len(stats.dropped_examples) < 5:
                stats.dropped_examples.append(f"row {number}: completion of {completion} tokens")
            continue
        prompt, trimmed = _fit_prompt(tokenizer, row["prompt"], budget)
        if prompt is None:
            stats.rows_dropped += 1
            if len(stats.dropped_examples) < 5:
                stats.dropped_examples.append(
                    f"row {number}: prompt cannot shrink to {budget} tokens"
                )
            continue
        stats.rows_trimmed += trimmed
        fitted.append({**row, "prompt": prompt})
    stats.rows_out = len(fitted)
    if stats.rows_trimmed or stats.rows_dropped:
        log.info(
            "fitted to %d tokens: %d of %d rows had their prompt shortened, %d dropped %s",
            max_length, stats.rows_trimmed, stats.rows_in, stats.rows_dropped, stats.dropped_examples,
        )  # fmt: skip
    return fitted, stats


def _completion_tokens(tokenizer: Any, completion: Any) -> int:
    text = completion if isinstance(completion, str) else "".join(m["content"] for m in completion)
    # +8: the chat template's role markers and end-of-turn tokens around the completion
    return len(tokenizer(text, add_special_tokens=False, verbose=False)["input_ids"]) + 8


def _prompt_tokens(tokenizer: Any, prompt: Any) -> int:
    if isinstance(prompt, str):
        return len(tokenizer(prompt, add_special_tokens=False, verbose=False)["input_ids"])
    text = tokenizer.apply_chat_template(prompt, add_generation_prompt=True, tokenize=False)
    return len(tokenizer(text, add_special_tokens=False, verbose=False)["input_ids"])


def _fit_prompt(tokenizer: Any, prompt: Any, budget: int) -> tuple[Any, bool]:
    """Shorten a prompt's longest messages until it fits ``budget`` tokens; None if it cannot.

    From the prompt's characters per token, a character target is set, and every message
    longer than a common cap is cut to it (keeping its start and end), so the longest
    messages shrink first and short ones are untouched. Each round checks the real
    count and aims lower by the overshoot; three rounds are almost always enough.
    """
    tokens = _prompt_tokens(tokenizer, prompt)
    if tokens <= budget:
        return prompt, False
    messages = [{"content": prompt}] if isinstance(prompt, str) else list(prompt)
    lengths = [len(m["content"]) for m in messages]
    # The last message is the request the completion answers: cut the others first.
    protected = len(messages) - 1 if len(messages) > 1 else None
    target = sum(lengths) * budget / tokens * 0.95
    for _ in range(6):
        spare = target - (lengths[protected] if protected is not None else 0)
        cuttable = [n for i, n in enumerate(lengths) if i != protected]
        if protected is not None and spare < 0.05 * target:  # the others cannot absorb it
            protected, spare, cuttable = None, target, lengths
        cap = _water_level(cuttable, spare)
        if cap <= 0:
            return None, True
        trimmed = [
            {**m, "content": trim_message(m["content"], cap)}
            if i != protected and len(m["content"]) > cap
            else m
            for i, m in enumerate(messages)
        ]
        candidate = trimmed[0]["content"] if isinstance(prompt, str) else trimmed
        tokens_now = _prompt_tokens(tokenizer, candidate)
        if tokens_now <= budget:
            return candidate, True
        target *= budget / tokens_now * 0.95
    return None, True


def _water_level(lengths: Sequence[int], target: float) -> int:
    """The cap C with sum(min(length, C)) just under ``target`` (0 if even C = 0 is too much)."""
    remaining, count = target, len(lengths)
    for length in sorted(lengths):
        if length * count <= remaining:
            remaining -= length
            count -= 1
        else:
            return int(remaining / count)
    return max(lengths, default=0)
