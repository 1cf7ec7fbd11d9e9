"""Chat-history text: tag names, and the code inside an attempt's fence."""

from __future__ import annotations

import functools
import re

# Tag base names. A tag may carry a model suffix, `get_strats_req_plist(qwen)` (v4) or
# `get_special_egc_req_plist,qwen` (older), and an outcome, `genned_strat_code(success)`.
# 2024-12 files name the same turns `get_strat_req_plist`, `gen_strats`, `strat_codegen(...)`.
TAG_STRATS_REQUESTS = frozenset({"get_strats_req_plist", "get_strat_req_plist"})
TAG_STRATS_BLOCK = TAG_STRATS_REQUESTS | {"genned_strats", "gen_strats", "get_strat_regen_plist"}
TAG_CODE_REQUEST = "get_strat_code_req_plist"
TAG_CODE_ATTEMPTS = frozenset({"genned_strat_code", "strat_codegen"})

_TAG_BASE = re.compile(r"[^(,]*")
_TAG_ARGS = re.compile(r"\(([^()]*)\)")
FENCE = "```"
# An opening fence. The language name, if any, sits between two runs of blanks; the old
# pattern ``[ \t]*(?:python3?|py)?[ \t]*`` let both runs share the same blanks, so a failing
# match tried every split of them (quadratic). Here the second run needs a language name
# before it, so each blank belongs to one run only, and both runs are possessive (``*+``,
# Python 3.11): a run of blanks is never given back, so a failing opening costs its length.
_OPENING_FENCE = re.compile(r"```[ \t]*+(?:(?:python3|python|py)[ \t]*+)?\r?\n", re.IGNORECASE)


@functools.lru_cache(maxsize=4096)
def parse_tag(tag: str) -> tuple[str, tuple[str, ...]]:
    """Split a tag into its base name and its parenthesised arguments (tags repeat: cached)."""
    base = _TAG_BASE.match(tag).group(0).strip()  # type: ignore[union-attr]
    return base, tuple(arg.strip() for arg in _TAG_ARGS.findall(tag))


def extract_code(message: str) -> str | None:
    """Return the text inside the first ```python fence of a message, or None.

    An opening fence is ```` ``` ````, blanks, an optional ``python3``/``python``/``py``
    (any case), blanks and a newline; the code runs to the next ```` ``` ````. Time is
    linear in the message, however hostile.
    """
    opening = _OPENING_FENCE.search(message)
    if opening is None:
        return None
    # No closing fence after the first opening means none after any later one either.
    end = message.find(FENCE, opening.end())
    return message[opening.end() : end] if end >= 0 else None
