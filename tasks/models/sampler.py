"""Seeded batched sampling from one causal LM: what garbling, evaluation and collecting draw with.

``Sampler.sample(prompts, seeds, max_new_tokens, temperature)`` gives one ``Sampled``
per prompt. Each row's noise comes from its own seed (one uniform per step, drawn from a
generator seeded with it, inverting the row's CDF), so a prompt's sample does not depend
on which prompts share its batch, how many processes sample, or in what order (in
float32, the CPU's default: ``tasks/models/loading.py``).

Rows that repeat a prompt (k samples of one task) share its prefill: the distinct prompts
go through the model once and their KV cache is copied out to every row asking for them,
which turns k prefills into one. Rows that finish (EOS or budget) leave the batch, so the
longest sample no longer carries the finished ones through every step
(``docs/benchmarks.md``, "Sampler speed").

Where the time went before (CPU, tiny model, batches of 16, 512-token prompts): about
half in ``torch.cat`` growing the KV cache at every step (the whole cache copied per
token), then prefill attention, tokenizing whole prompts only to keep their last 512
tokens, and the prefill's logits over every prompt position. So the cache is allocated
once per batch at its final length and filled in place, the prefill keeps the last
position's logits only, only the end of each prompt is tokenized, and the softmax is
float32 (a float64 one costs a copy of the vocabulary per row per step, and float64 is
slow on most GPUs).
"""

from __future__ import annotations

import logging
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

from agir_retrain.tasks.models.kv_cache import preallocated_cache
from agir_retrain.tasks.models.loading import SamplingDtype, load_model

if TYPE_CHECKING:
    import torch

log = logging.getLogger(__name__)

# Characters per token assumed when cutting a prompt before tokenizing it; a prompt whose
# end gives too few tokens is tokenized again from further back (then whole).
_CHARS_PER_TOKEN = 4
# Tokens kept between the cut and the tokens used: tokenizing from the middle of a word
# can change the first few tokens, never ones this far on.
_CUT_MARGIN_TOKENS = 64


@dataclass(frozen=True, slots=True, kw_only=True)
class Sampled:
    """One sample: its text (special tokens dropped) and the new tokens that made it (EOS cut)."""

    text: str
    token_ids: tuple[int, ...]

    @property
    def new_tokens(self) -> int:
        """How many new tokens the sample has."""
        return len(self.token_ids)


def encode_tails(
    tokenizer: Any,
    texts: Sequence[str],
    max_tokens: int,
    *,
    chars_per_token: int = _CHARS_PER_TOKEN,
) -> list[list[int]]:
    """The last ``max_tokens`` tokens of each text, tokenizing only as much of its end as needed.

    Prompts are often several times longer than what is kept, and tokenizing them whole
    took a sixth of the sampling time. The end is tokenized first; a cut that gives too
    few tokens is made again twice as far back, until the text is tokenized whole.
    """
    result: list[list[int] | None] = [None] * len(texts)
    todo = list(range(len(texts)))
    window = (max_tokens + _CUT_MARGIN_TOKENS) * chars_per_token
    while todo:
        pieces = [texts[i][-window:] for i in todo]
        encoded = tokenizer(pieces, add_special_tokens=False, verbose=False)["input_ids"]
        retry = []
        for i, piece, ids in zip(todo, pieces, encoded, strict=True):
            whole = len(piece) == len(texts[i])
            if whole or len(ids) >= max_tokens + _CUT_MARGIN_TOKENS:
                result[i] = list(ids[-max_tokens:])
            else:
                retry.append(i)
        todo, window = retry, window * 2
    return [ids for ids in result if ids is not None]


class Sampler:
    """Holds one causal LM and its tokenizer; samples batches of prompts, each row on its seed."""

    def __init__(
        self, model: Any, tokenizer: Any, device: torch.device, *, max_prompt_tokens: int = 512
    ) -> None:
        self.model = model  # callers may swap in a PeftModel wrapping it
        self.tokenizer = tokenizer
        self.device = device
        self.max_prompt_tokens = max_prompt_tokens
        # Rows repeating a prompt share its prefill, and finished rows leave the batch; each
        # can be turned off only to measure what it saves (samples are the same either way).
        self.share_prefill = True
        self.drop_finished = True
        self.eos_id = tokenizer.eos_token_id
        self.pad_id = tokenizer.pad_token_id if tokenizer.pad_token_id is not None else self.eos_id

    @classmethod
    def load(
        cls,
        model_name: str,
        *,
        gpus: float = 0.0,
        cpus: float = 1.0,
        load_in_4bit: bool = False,
        max_prompt_tokens: int = 512,
        dtype: SamplingDtype = "auto",
    ) -> Sampler:
        """A sampler holding ``model_name`` (a resolved folder or hub id), in ``dtype``."""
        model, tokenizer, device = load_model(
            model_name, gpus=gpus, cpus=cpus, load_in_4bit=load_in_4bit, dtype=dtype
        )
        log.info("sampler ready: %s on %s", model_name, device)
        return cls(model, tokenizer, device, max_prompt_tokens=max_prompt_tokens)

    def sample(
        self,
        prompts: Sequence[str | Sequence[int]],
        seeds: Sequence[int],
        max_new_tokens: Sequence[int],
        temperature: float,
        on_done: Callable[[int], None] | None = None,
    ) -> list[Sampled]:
        """Sample each prompt (rendered text or token ids) up to EOS or its token budget.

        Prompts keep their last ``max_prompt_tokens`` tokens. No top-k or top-p cut.
        ``on_done(n)`` is called as rows finish, with how many just did.
        """
        import torch

        if not len(prompts) == len(seeds) == len(max_new_tokens):
            raise ValueError("prompts, seeds and max_new_tokens must have the same length")
        if not prompts:
            return []
        if temperature <= 0 or min(max_new_tokens) < 1:
            raise ValueError("temperature and every max_new_tokens must be positive")
        texts = [i for i, p in enumerate(prompts) if isinstance(p, str)]
        encoded = encode_tails(
            self.tokenizer, [str(prompts[i]) for i in texts], self.max_prompt_tokens
        )
        keep = self.max_prompt_tokens
        rows = [[] if isinstance(p, str) else list(p)[-keep:] for p in prompts]
        for i, ids in zip(texts, encoded, strict=True):
            rows[i] = ids
        if any(not row for row in rows):
            raise ValueError("every prompt must have at least one token")
        with torch.inference_mode():
            tokens = self._generate(rows, list(max_new_tokens), list(seeds), temperature, on_done)
        samples = []
        for row, budget in zip(tokens, max_new_tokens, strict=True):
            row = row[:budget]
            if self.eos_id in row:
                row = row[: row.index(self.eos_id)]
            text = self.tokenizer.decode(row, skip_special_tokens=True)
            samples.append(Sampled(text=text, token_ids=tuple(row)))
        return samples

    def _generate(
        self,
        rows: list[list[int]],
        budgets: list[int],
        seeds: list[int],
        temperature: float,
        on_done: Callable[[int], None] | None,
    ) -> list[list[int]]:
        """Left-padded batched sampling with a preallocated KV cache and per-row noise.

        Rows with the same prompt share its prefill: the distinct prompts go through the
        model once, and their cache and last logits are copied out to every row that
        asked for them before the first draw. Each row's prefill is what it would be alone
        (a row's values do not depend on its batch), so sharing changes no sample.
        """
        import torch

        batch, width, steps = len(rows), max(map(len, rows)), max(budgets)
        # The first row asking for each distinct prompt, and which of them each row takes.
        distinct_rows: list[int] = []
        owner: list[int] = []
        seen: dict[tuple[int, ...], int] = {}
        for i, ids in enumerate(rows):
            if tuple(ids) not in seen or not self.share_prefill:
                seen[tuple(ids)] = len(distinct_rows)
                distinct_rows.append(i)
            owner.append(seen[tuple(ids)])
        input_ids = torch.full((len(distinct_rows), width), self.pad_id, dtype=torch.long)
        for i, row in enumerate(distinct_rows):
            input_ids[i, width - len(rows[row]) :] = torch.tensor(rows[row])
        # The whole mask up front: padding is 0, prompt and every future token 1; step s
        # reads its first width + s columns.
        attention = torch.ones((batch, width + steps), dtype=torch.long)
        for i, ids in enumerate(rows):
            attention[i, : width - len(ids)] = 0
        # Each row's uniforms come from its own generator, as many as its own budget: the
        # same numbers whatever the batch.
        uniforms = torch.zeros((batch, steps), dtype=torch.float64)
        for i, (seed, budget) in enumerate(zip(seeds, budgets, strict=True)):
            generator = torch.Generator().manual_seed(seed)
            uniforms[i, :budget] = torch.rand(budget, generator=generator, dtype=torch.float64)
        uniforms = uniforms.to(self.device, torch.float32)
        input_ids, attention = input_ids.to(self.device), attention.to(self.device)
        positions = (attention[:, :width].cumsum(-1) - 1).clamp(min=0)
        limits = torch.tensor(budgets, device=self.device)
        out = torch.full((batch, steps), self.pad_id, dtype=torch.long, device=self.device)
        cache = preallocated_cache(self.model.config, width + steps)
        # Without padding the mask is all ones: leaving it out lets attention run its
        # causal kernel (half the prefill time) and spares building a mask at every step.
        padded = any(len(ids) < width for ids in rows)
        logits = self._last_logits(
            input_ids,
            attention[distinct_rows, :width] if padded else None,
            positions[distinct_rows] if padded else None,
            cache,
        )
        if len(distinct_rows) < batch:  # copy each prompt's cache and logits to its rows
            index = torch.tensor(owner, device=self.device)
            cache.batch_select_indices(index)
            logits = logits.index_select(0, index)
        live = torch.arange(batch, device=self.device)  # the rows the model still runs
        done = torch.zeros(batch, dtype=torch.bool, device=self.device)  # of the live rows
        finished = 0
        for step in range(steps):
            token = _draw(logits, uniforms[live, step], temperature).masked_fill(done, self.pad_id)
            out[live, step] = token
            done |= (token == self.eos_id) | (step + 1 >= limits[live])
            now = batch - len(live) + int(done.sum())
            if on_done is not None and now > finished:
                on_done(now - finished)
            finished = now
            if finished == batch:  # always so by the last step: no row's budget passes it
                break
            if self.drop_finished and bool(done.any()):
                # Finished rows leave the batch (their cache rows too): the rows still
                # sampling no longer carry them through every step.
                keep = (~done).nonzero().squeeze(-1)
                live, token, done = live[keep], token[keep], done[keep]
                attention, positions = attention[keep], positions[keep]
                cache.batch_select_indices(keep)
            positions = positions[:, -1:] + 1
            logits = self._last_logits(
                token[:, None],
                attention[:, : width + step + 1] if padded else None,
                positions if padded else None,
                cache,
            )
        return out.tolist()

    def _last_logits(
        self,
        input_ids: torch.Tensor,
        attention: torch.Tensor | None,
        positions: torch.Tensor | None,
        cache: Any,
    ) -> torch.Tensor:
        """The next-token logits of each row (the prefill keeps the last position's only)."""
        return self.model(
            input_ids=input_ids,
            attention_mask=attention,
            position_ids=positions,
            past_key_values=cache,
            use_cache=True,
            logits_to_keep=1,
        ).logits[:, -1, :]


def _draw(logits: torch.Tensor, uniform: torch.Tensor, temperature: float) -> torch.Tensor:
    """One token per row: the first whose cumulative probability exceeds the row's uniform."""
    import torch

    cdf = torch.softmax(logits.float() / temperature, dim=-1).cumsum(dim=-1)
    total = cdf[:, -1:]
    # Strictly below the total, so the token found has a probability above zero.
    target = torch.minimum(
        uniform[:, None] * total, torch.nextafter(total, torch.zeros_like(total))
    )
    return torch.searchsorted(cdf, target, right=True).squeeze(-1)
