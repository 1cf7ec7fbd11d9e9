"""Sample completions: k per task and model, from a base model and the same base with each adapter.

The sampler reuses garbling's ``Garbler`` (batched, left-padded sampling with a KV cache,
where each row draws its noise from its own seed) through its public ``sample`` method.
Every completion is seeded from (seed, task, model, sample), so a rerun, another batch
size or another number of actors gives the same text. Adapters are loaded once per
holder as named PEFT adapters on the one base; the bare base is sampled with them
disabled, so a holder keeps a single copy of the weights.

``CompletionSampler`` is plain Python; ``tasks/ray_pool.py`` puts it on actors.
"""

from __future__ import annotations

import contextlib
import hashlib
import logging
from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from typing import Any

from agir_retrain.tasks.dataset.garble import Garbler
from agir_retrain.tasks.environment.contract import Completion, EvalTask
from agir_retrain.tasks.records import GarbleRequest, Message, PromptKind, Role
from agir_retrain.tasks.settings.base import SamplingDtype
from agir_retrain.tasks.settings.evaluation import EvaluateConfig, SamplingPoolSettings
from agir_retrain.tasks.settings.models import GarbleSettings

log = logging.getLogger(__name__)

_SEED_MASK = (1 << 63) - 1


@dataclass(frozen=True, slots=True, kw_only=True)
class SampleRequest:
    """One completion to draw: which task, which model, which sample, and the prompt."""

    task_id: str
    model: str
    sample: int
    prompt: tuple[dict[str, str], ...]


@dataclass(frozen=True, slots=True, kw_only=True)
class SamplerSpec:
    """What a sampler holds: the base model, its adapters by label, and how to sample."""

    base_model: str
    base_label: str
    adapters: tuple[tuple[str, str], ...]  # (label, folder)
    temperature: float
    max_new_tokens: int
    max_prompt_tokens: int
    max_prompt_chars_per_message: int
    seed: int
    cpus: float = 1.0
    gpus: float = 0.0
    load_in_4bit: bool = False
    dtype: SamplingDtype = "auto"

    @classmethod
    def from_pool(
        cls,
        pool: SamplingPoolSettings,
        *,
        base_model: str,
        base_label: str,
        adapters: tuple[tuple[str, str], ...],
        temperature: float,
        max_new_tokens: int,
        seed: int,
    ) -> SamplerSpec:
        """A spec whose actors are set up as ``pool`` says (``base_model`` already resolved)."""
        return cls(
            base_model=base_model,
            base_label=base_label,
            adapters=adapters,
            temperature=temperature,
            max_new_tokens=max_new_tokens,
            max_prompt_tokens=pool.max_prompt_tokens,
            max_prompt_chars_per_message=pool.max_prompt_chars_per_message,
            seed=seed,
            cpus=pool.cpus_per_actor,
            gpus=pool.gpus_per_actor,
            load_in_4bit=pool.load_in_4bit,
            dtype=pool.dtype,
        )

    @classmethod
    def from_config(cls, config: EvaluateConfig, base_model: str) -> SamplerSpec:
        """The spec of an evaluation (``base_model`` already resolved to a folder or hub id)."""
        return cls.from_pool(
            config.sampling,
            base_model=base_model,
            base_label=config.base_label,
            adapters=tuple(config.adapter_paths()),
            temperature=config.temperature,
            max_new_tokens=config.max_new_tokens,
            seed=config.seed,
        )

    def garble_settings(self) -> GarbleSettings:
        """Garbler settings that sample exactly ``max_new_tokens`` (or to EOS) at our temperature."""
        return GarbleSettings(
            temperature=self.temperature,
            # The garbler sizes each sample by its chosen text within [min, max]; equal bounds
            # give every completion the same budget.
            max_new_tokens=self.max_new_tokens,
            min_new_tokens=self.max_new_tokens,
            max_prompt_tokens=self.max_prompt_tokens,
            max_prompt_chars_per_message=self.max_prompt_chars_per_message,
            seed=self.seed,
            cpus_per_actor=self.cpus,
            gpus_per_actor=self.gpus,
            load_in_4bit=self.load_in_4bit,
            dtype=self.dtype,
        )


def sample_seed(seed: int, task_id: str, model: str, sample: int) -> int:
    """The seed of one completion: stable across reruns, batch sizes and pool sizes."""
    key = f"{seed}\x1f{task_id}\x1f{model}\x1f{sample}".encode()
    return int.from_bytes(hashlib.blake2b(key, digest_size=8).digest(), "big") & _SEED_MASK


def sample_requests(
    tasks: Sequence[EvalTask], models: Sequence[str], samples: int
) -> list[SampleRequest]:
    """Every (task, model, sample) to draw."""
    return [
        SampleRequest(task_id=t.task_id, model=model, sample=s, prompt=t.prompt)
        for model in models
        for t in tasks
        for s in range(samples)
    ]


def plan_sample_batches(
    requests: Sequence[SampleRequest], batch_size: int
) -> list[list[SampleRequest]]:
    """Batches of one model each, requests sorted by prompt length (ties by id) within a model.

    Batches are formed before they are spread over actors, so they do not depend on
    the pool size (and a completion does not depend on its batch anyway).
    """
    by_model: dict[str, list[SampleRequest]] = {}
    for request in requests:
        by_model.setdefault(request.model, []).append(request)
    batches = []
    for group in by_model.values():
        ordered = sorted(
            group,
            key=lambda r: (sum(len(m["content"]) for m in r.prompt), r.task_id, r.sample),
        )
        batches += [ordered[i : i + batch_size] for i in range(0, len(ordered), batch_size)]
    return batches


class CompletionSampler:
    """Holds the base model once (with every adapter as a named PEFT adapter) and samples."""

    def __init__(self, spec: SamplerSpec) -> None:
        self.spec = spec
        self.garbler = Garbler(spec.base_model, spec.garble_settings())
        self.labels = {spec.base_label, *(label for label, _ in spec.adapters)}
        if spec.adapters:
            from peft import PeftModel

            (first_label, first_path), *rest = spec.adapters
            model: Any = PeftModel.from_pretrained(
                self.garbler.model, first_path, adapter_name=first_label
            )
            for label, path in rest:
                model.load_adapter(path, adapter_name=label)
            model.eval()
            # The garbler samples from whatever its ``model`` is; a PeftModel forwards the
            # same call to the active adapter.
            self.garbler.model = model
        log.info(
            "sampler ready: %s with adapters %s", spec.base_model, [a for a, _ in spec.adapters]
        )

    @contextlib.contextmanager
    def _active(self, label: str) -> Iterator[None]:
        """Make ``label``'s weights the ones sampled from (the bare base: adapters disabled)."""
        if label not in self.labels:
            raise ValueError(f"model {label!r} is not held here (holding {sorted(self.labels)})")
        model = self.garbler.model
        if not self.spec.adapters:
            yield
        elif label == self.spec.base_label:
            with model.disable_adapter():
                yield
        else:
            model.set_adapter(label)
            yield

    def sample(self, batch: Sequence[SampleRequest]) -> list[Completion]:
        """Draw one completion per request (one model per batch), each from its own seed."""
        if not batch:
            return []
        label = batch[0].model
        if any(r.model != label for r in batch):
            raise ValueError("a batch must hold one model's requests")
        requests = [
            GarbleRequest(
                run_id=r.task_id,
                prompt_kind=PromptKind.CODE,
                # The garbler cuts over-long messages (start and end kept) before rendering.
                prompt=tuple(Message(role=Role(m["role"]), content=m["content"]) for m in r.prompt),
                chosen="",
            )
            for r in batch
        ]
        seeds = [sample_seed(self.spec.seed, r.task_id, r.model, r.sample) for r in batch]
        with self._active(label):
            texts = self.garbler.sample(requests, seeds)
        return [
            Completion(task_id=r.task_id, model=r.model, sample=r.sample, completion=text)
            for r, (text, _tokens) in zip(batch, texts, strict=True)
        ]


def sample_locally(
    spec: SamplerSpec, batches: Sequence[Sequence[SampleRequest]]
) -> list[Completion]:
    """Sample every batch in this process (a REPL, a test, or a machine without Ray)."""
    sampler = CompletionSampler(spec)
    return [completion for batch in batches for completion in sampler.sample(batch)]
