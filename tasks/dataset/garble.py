"""Garble: the rejected side of a first-try pair, sampled from the base model at high temperature.

Each request is seeded from (base seed, run id, prompt kind, draw), and every row of a
batch draws its sampling noise from its own generator, so a request's text does not
depend on which requests share its batch, how many actors there are, or the order
they finish in. An empty sample, or one equal to the chosen text, is drawn again with
the next seed; what still fails gets a model-free corruption of the chosen text, and
the result records which method made it.

``Garbler`` is plain Python holding one model; ``tasks/ray_pool.py`` puts it on actors.
"""

from __future__ import annotations

import hashlib
import logging
import random
from collections.abc import Sequence
from typing import TYPE_CHECKING, Any

from agir_retrain.tasks.chat import render_prompt, trim_message
from agir_retrain.tasks.records import (
    GarbleMethod,
    GarbleRequest,
    GarbleResult,
    PromptKind,
)

# Requests are made with the pairs they complete (runs stage); named here for callers.
from agir_retrain.tasks.runs.pairing import (
    REQUEST_MAX_CHARS_PER_MESSAGE as REQUEST_MAX_CHARS_PER_MESSAGE,
)
from agir_retrain.tasks.runs.pairing import garble_requests as garble_requests
from agir_retrain.tasks.settings.models import GarbleSettings

if TYPE_CHECKING:
    import torch

log = logging.getLogger(__name__)

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
    """Holds a base model once and samples garbled responses for batches of requests."""

    def __init__(self, model_name: str, settings: GarbleSettings) -> None:
        import torch
        from transformers import AutoModelForCausalLM, AutoTokenizer

        self.settings = settings
        use_gpu = settings.gpus_per_actor > 0 and torch.cuda.is_available()
        self.device = torch.device("cuda" if use_gpu else "cpu")
        if not use_gpu:
            # One actor per reserved CPU: more threads only fight the other actors.
            torch.set_num_threads(max(1, int(settings.cpus_per_actor)))
        self.tokenizer = AutoTokenizer.from_pretrained(model_name)
        load: dict[str, Any] = {}
        if settings.load_in_4bit:
            from transformers import BitsAndBytesConfig

            load["quantization_config"] = BitsAndBytesConfig(
                load_in_4bit=True,
                bnb_4bit_quant_type="nf4",
                bnb_4bit_use_double_quant=True,
                bnb_4bit_compute_dtype=torch.bfloat16 if use_gpu else torch.float32,
            )
            load["device_map"] = {"": self.device.index or 0} if use_gpu else "cpu"
        elif use_gpu:
            load["dtype"] = torch.bfloat16
        self.model = AutoModelForCausalLM.from_pretrained(model_name, **load)
        if not settings.load_in_4bit:
            self.model.to(self.device)
        self.model.eval()
        self.pad_id = self.tokenizer.pad_token_id
        if self.pad_id is None:
            self.pad_id = self.tokenizer.eos_token_id
        log.info("garbler ready: %s on %s", model_name, self.device)

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
            pending = still_pending
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

    def new_token_budget(self, chosen: str) -> int:
        """About as many tokens as the chosen text, within the configured floor and cap."""
        length = len(self.tokenizer(chosen, add_special_tokens=False, verbose=False)["input_ids"])
        return max(self.settings.min_new_tokens, min(self.settings.max_new_tokens, length))

    def sample(
        self, requests: Sequence[GarbleRequest], seeds: Sequence[int]
    ) -> list[tuple[str, int]]:
        """One sample per request: (text, new tokens), each row driven by its own seed."""
        import torch

        limit = self.settings.max_prompt_chars_per_message
        prompts = [
            # Conformed to the template (merged turns, folded system) where it demands it.
            render_prompt(
                self.tokenizer,
                [
                    {"role": m.role.value, "content": trim_message(m.content, limit)}
                    for m in r.prompt
                ],
            )
            for r in requests
        ]
        encoded = self.tokenizer(prompts, add_special_tokens=False, verbose=False)["input_ids"]
        rows = [ids[-self.settings.max_prompt_tokens :] for ids in encoded]
        budgets = [self.new_token_budget(r.chosen) for r in requests]
        with torch.inference_mode():
            tokens = self._generate(rows, budgets, seeds)
        texts = []
        for row, budget in zip(tokens, budgets, strict=True):
            row = row[:budget]
            if self.tokenizer.eos_token_id in row:
                row = row[: row.index(self.tokenizer.eos_token_id)]
            texts.append((self.tokenizer.decode(row, skip_special_tokens=True), len(row)))
        return texts

    def _generate(
        self, rows: list[list[int]], budgets: list[int], seeds: Sequence[int]
    ) -> list[list[int]]:
        """Left-padded batched sampling with a KV cache and per-row inverse-CDF noise."""
        import torch

        batch, width, steps = len(rows), max(map(len, rows)), max(budgets)
        input_ids = torch.full((batch, width), self.pad_id, dtype=torch.long)
        attention = torch.zeros((batch, width), dtype=torch.long)
        for i, ids in enumerate(rows):
            input_ids[i, width - len(ids) :] = torch.tensor(ids)
            attention[i, width - len(ids) :] = 1
        # One uniform per row and step, from that row's own generator.
        uniforms = torch.stack(
            [
                torch.rand(steps, generator=torch.Generator().manual_seed(s), dtype=torch.float64)
                for s in seeds
            ]
        ).to(self.device)
        input_ids, attention = input_ids.to(self.device), attention.to(self.device)
        positions = (attention.cumsum(-1) - 1).clamp(min=0)
        limits = torch.tensor(budgets, device=self.device)
        out = torch.full((batch, steps), self.pad_id, dtype=torch.long, device=self.device)
        done = torch.zeros(batch, dtype=torch.bool, device=self.device)
        past: Any = None
        current = input_ids
        for step in range(steps):
            output = self.model(
                input_ids=current,
                attention_mask=attention,
                position_ids=positions,
                past_key_values=past,
                use_cache=True,
            )
            past = output.past_key_values
            token = self._draw(output.logits[:, -1, :], uniforms[:, step])
            token = torch.where(done, torch.full_like(token, self.pad_id), token)
            out[:, step] = token
            done |= (token == self.tokenizer.eos_token_id) | (step + 1 >= limits)
            if bool(done.all()):
                break
            current = token[:, None]
            attention = torch.cat([attention, torch.ones_like(current)], dim=-1)
            positions = positions[:, -1:] + 1
        return out.tolist()

    def _draw(self, logits: torch.Tensor, uniform: torch.Tensor) -> torch.Tensor:
        """Sample one token per row by inverting the CDF at that row's uniform."""
        import torch

        probs = torch.softmax(logits.double() / self.settings.temperature, dim=-1)
        cdf = probs.cumsum(dim=-1)
        target = (uniform * cdf[:, -1]).unsqueeze(-1)
        return torch.searchsorted(cdf, target).squeeze(-1).clamp(max=logits.shape[-1] - 1)
