"""Garble: the rejected side of a first-try pair, sampled from the base model at high temperature.

Each request is seeded from (base seed, run id, prompt kind, draw), and every row of a
batch draws its sampling noise from its own generator, so a request's text does not
depend on which requests share its batch, how many actors there are, or the order
they finish in. An empty sample, or one equal to the chosen text, is drawn again with
the next seed; what still fails gets a model-free corruption of the chosen text, and
the result records which method made it.

``Garbler`` is plain Python holding one model in a ``Sampler`` (``tasks/models/sampler.py``:
the batched seeded sampling, shared with evaluation); ``tasks/ray_pool.py`` puts it on actors.
"""

from __future__ import annotations

import hashlib
import logging
import random
from collections.abc import Callable, Sequence
from typing import TYPE_CHECKING, Any

from agir_retrain.tasks.chat import render_prompt, trim_message
from agir_retrain.tasks.models.sampler import Sampler
from agir_retrain.tasks.records import (
    GarbleMethod,
    GarbleRequest,
    GarbleResult,
    PromptKind,
)
from agir_retrain.tasks.settings.models import GarbleSettings

if TYPE_CHECKING:
    # Requests are made with the pairs they complete (runs stage); named here for callers.
    from agir_retrain.tasks.runs.pairing import (
        REQUEST_MAX_CHARS_PER_MESSAGE as REQUEST_MAX_CHARS_PER_MESSAGE,
    )
    from agir_retrain.tasks.runs.pairing import garble_requests as garble_requests

log = logging.getLogger(__name__)


def __getattr__(name: str) -> Any:
    """``garble_requests`` and ``REQUEST_MAX_CHARS_PER_MESSAGE``, from the runs stage on first use.

    The pairing module needs polars, which sampling on the GPU machine has not.
    """
    if name in ("garble_requests", "REQUEST_MAX_CHARS_PER_MESSAGE"):
        from agir_retrain.tasks.runs import pairing

        return getattr(pairing, name)
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")


_SEED_MASK = (1 << 63) - 1


def garble_seed(base_seed: int, run_id: str, prompt_kind: PromptKind, draw: int) -> int:
    """The seed of one draw for one request: stable across runs, machines and pool sizes."""
    key = f"{base_seed}\x1f{run_id}\x1f{prompt_kind.value}\x1f{draw}".encode()
    return int.from_bytes(hashlib.blake2b(key, digest_size=8).digest(), "big") & _SEED_MASK


def plan_batches(requests: Sequence[GarbleRequest], batch_size: int) -> list[list[GarbleRequest]]:
    """Sort requests by length (ties by id) and cut them into batches.

    Batches are formed before they are spread over actors, so the same requests give
    the same batches whatever the pool size.
    """
    ordered = sorted(
        requests,
        key=lambda r: (sum(len(m.content) for m in r.prompt) + len(r.chosen), r.request_id),
    )
    return [list(ordered[i : i + batch_size]) for i in range(0, len(ordered), batch_size)]


def issue_order(batches: Sequence[Sequence[GarbleRequest]]) -> list[int]:
    """The order to hand batches to a pool in: the longest chosen texts (most steps) first.

    Longest first keeps a long batch from running alone at the end while the other
    actors wait; which batch runs where changes no text, since each request has its seed.
    """
    return sorted(
        range(len(batches)), key=lambda i: (-max((len(r.chosen) for r in batches[i]), default=0), i)
    )


def corrupt(text: str, seed: int) -> str:
    """A model-free garble: the chosen text's words (or characters) shuffled; never equal to it."""
    rng = random.Random(seed)
    words = text.split()
    for units, joiner in ((words, " "), (list(text), "")):
        if len(set(units)) > 1:
            shuffled = list(units)
            for _ in range(8):
                rng.shuffle(shuffled)
                candidate = joiner.join(shuffled)
                if candidate.strip() != text.strip():
                    return candidate
    return f"{text[::-1]} [garbled]" if text.strip() else "[garbled]"


def _acceptable(sample: str, chosen: str) -> bool:
    return bool(sample.strip()) and sample.strip() != chosen.strip()


class Garbler:
    """Holds a base model once (in a ``Sampler``) and samples garbled responses for batches."""

    on_progress: Callable[[int], None] | None = None

    def __init__(
        self,
        model_name: str,
        settings: GarbleSettings,
        on_progress: Callable[[int], None] | None = None,
    ) -> None:
        self.settings = settings
        self.sampler = Sampler.load(
            model_name,
            gpus=settings.gpus_per_actor,
            cpus=settings.cpus_per_actor,
            load_in_4bit=settings.load_in_4bit,
            max_prompt_tokens=settings.max_prompt_tokens,
            dtype=settings.dtype,
        )
        # Called with how many requests of a batch were settled (sampled, or fallen back).
        self.on_progress = on_progress
        log.info("garbler ready: %s on %s", model_name, self.sampler.device)

    # The sampler's parts, under the names callers used before it existed.
    @property
    def model(self) -> Any:
        """The model sampled from (settable: evaluation swaps in a PeftModel around it)."""
        return self.sampler.model

    @model.setter
    def model(self, model: Any) -> None:
        self.sampler.model = model

    @property
    def tokenizer(self) -> Any:
        """The base model's tokenizer."""
        return self.sampler.tokenizer

    @property
    def device(self) -> Any:
        """Where the model runs."""
        return self.sampler.device

    @property
    def pad_id(self) -> int:
        """The token left padding is made of."""
        return self.sampler.pad_id

    def garble(self, batch: Sequence[GarbleRequest]) -> list[GarbleResult]:
        """Sample a rejected text for each request, redrawing bad samples with the next seed."""
        results: dict[str, GarbleResult] = {}
        pending = list(batch)
        for draw in range(self.settings.max_redraws + 1):
            if not pending:
                break
            seeds = [
                garble_seed(self.settings.seed, r.run_id, r.prompt_kind, draw) for r in pending
            ]
            samples = self.sample(pending, seeds)
            still_pending = []
            for request, seed, (text, new_tokens) in zip(pending, seeds, samples, strict=True):
                if _acceptable(text, request.chosen):
                    results[request.request_id] = GarbleResult(
                        run_id=request.run_id,
                        prompt_kind=request.prompt_kind,
                        rejected=text,
                        garble_method=GarbleMethod.MODEL,
                        draws=draw + 1,
                        seed=seed,
                        new_tokens=new_tokens,
                    )
                else:
                    still_pending.append(request)
            self._progress(len(pending) - len(still_pending))
            pending = still_pending
        self._progress(len(pending))
        for request in pending:
            seed = garble_seed(self.settings.seed, request.run_id, request.prompt_kind, -1)
            results[request.request_id] = GarbleResult(
                run_id=request.run_id,
                prompt_kind=request.prompt_kind,
                rejected=corrupt(request.chosen, seed),
                garble_method=GarbleMethod.FALLBACK,
                draws=self.settings.max_redraws + 1,
                seed=seed,
                new_tokens=0,
            )
        return [results[r.request_id] for r in batch]

    def _progress(self, settled: int) -> None:
        if settled and self.on_progress is not None:
            self.on_progress(settled)

    def new_token_budgets(self, chosen: Sequence[str]) -> list[int]:
        """``new_token_budget`` of each text, tokenized in one call."""
        if not chosen:
            return []
        encoded = self.tokenizer(list(chosen), add_special_tokens=False, verbose=False)
        low, high = self.settings.min_new_tokens, self.settings.max_new_tokens
        return [max(low, min(high, len(ids))) for ids in encoded["input_ids"]]

    def new_token_budget(self, chosen: str) -> int:
        """About as many tokens as the chosen text, within the configured floor and cap."""
        return self.new_token_budgets([chosen])[0]

    def render(self, request: GarbleRequest) -> str:
        """The request's prompt as the model sees it: each message cut, then the chat template."""
        limit = self.settings.max_prompt_chars_per_message
        messages = [
            {"role": m.role.value, "content": trim_message(m.content, limit)}
            for m in request.prompt
        ]
        # Conformed to the template (merged turns, folded system) where it demands it.
        return render_prompt(self.tokenizer, messages)

    def sample(
        self, requests: Sequence[GarbleRequest], seeds: Sequence[int]
    ) -> list[tuple[str, int]]:
        """One sample per request: (text, new tokens), each row driven by its own seed."""
        samples = self.sampler.sample(
            [self.render(r) for r in requests],
            seeds,
            self.new_token_budgets([r.chosen for r in requests]),
            self.settings.temperature,
        )
        return [(s.text, s.new_tokens) for s in samples]
