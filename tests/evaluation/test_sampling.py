"""Sampling completions from the tiny model: seeded per (task, model, sample), adapters applied."""

from __future__ import annotations

import pytest

from agir_retrain.tasks.environment.contract import EvalTask
from agir_retrain.tasks.evaluation.sampling import (
    CompletionSampler,
    SamplerSpec,
    plan_sample_batches,
    sample_locally,
    sample_requests,
    sample_seed,
)

TASKS = [
    EvalTask(
        task_id=f"run{i}#0/code",
        prompt=(
            {"role": "system", "content": "You are an agent freeing disk space."},
            {"role": "user", "content": "Write Python code to clean /var/log. " * (i + 1)},
        ),
        scenario="debian-like",
    )
    for i in range(3)
]


@pytest.fixture(scope="module")
def adapter(tiny_model: str, tmp_path_factory) -> str:
    """A LoRA adapter on the tiny model with non-zero weights (so it changes the samples)."""
    from peft import LoraConfig, get_peft_model
    from transformers import AutoModelForCausalLM

    folder = tmp_path_factory.mktemp("adapter")
    base = AutoModelForCausalLM.from_pretrained(tiny_model)
    # init_lora_weights=False: random A and B; the default (B = 0) would be a no-op adapter.
    model = get_peft_model(
        base, LoraConfig(r=4, target_modules=["q_proj", "v_proj"], init_lora_weights=False)
    )
    model.save_pretrained(folder)
    return str(folder)


def spec(model: str, adapters: tuple[tuple[str, str], ...] = (), base_label: str = "base"):
    return SamplerSpec(
        base_model=model,
        base_label=base_label,
        adapters=adapters,
        temperature=1.0,
        max_new_tokens=16,
        max_prompt_tokens=256,
        max_prompt_chars_per_message=2000,
        seed=5,
    )


def by_key(completions):
    return {(c.model, c.task_id, c.sample): c.completion for c in completions}


def test_seed_depends_on_task_model_and_sample() -> None:
    seeds = {sample_seed(0, t, m, s) for t in ("a", "b") for m in ("base", "lora") for s in (0, 1)}
    assert len(seeds) == 8
    assert sample_seed(0, "a", "base", 0) == sample_seed(0, "a", "base", 0)


def test_batches_hold_one_model_each() -> None:
    requests = sample_requests(TASKS, ["base", "lora"], samples=2)
    assert len(requests) == 12
    batches = plan_sample_batches(requests, batch_size=5)
    assert all(len({r.model for r in batch}) == 1 for batch in batches)
    flat = [(r.model, r.task_id, r.sample) for batch in batches for r in batch]
    assert sorted(flat) == sorted((r.model, r.task_id, r.sample) for r in requests)
    assert [(b[0].model, len(b)) for b in batches] == [
        ("base", 5), ("base", 1), ("lora", 5), ("lora", 1),
    ]  # fmt: skip
    # Within a model, shortest prompts first.
    lengths = [len(r.prompt[1]["content"]) for r in batches[0] + batches[1]]
    assert lengths == sorted(lengths)


@pytest.mark.slow
def test_same_completions_across_reruns_and_batch_sizes(tiny_model: str, adapter: str) -> None:
    requests = sample_requests(TASKS, ["base", "lora"], samples=2)
    held = spec(tiny_model, (("lora", adapter),))
    first = by_key(sample_locally(held, plan_sample_batches(requests, 8)))
    again = by_key(sample_locally(held, plan_sample_batches(requests, 8)))
    one_by_one = by_key(sample_locally(held, plan_sample_batches(requests, 1)))
    assert first == again == one_by_one
    assert len(first) == 12
    assert len(set(first.values())) > 6  # samples differ from one another


@pytest.mark.slow
def test_adapter_is_applied_and_base_is_bare(tiny_model: str, adapter: str) -> None:
    requests = sample_requests(TASKS, ["base"], samples=1)
    with_adapter = CompletionSampler(spec(tiny_model, (("lora", adapter),)))
    bare = CompletionSampler(spec(tiny_model))
    # The base sampled next to an adapter is the bare base (the adapter disabled).
    assert by_key(with_adapter.sample(requests)) == by_key(bare.sample(requests))
    # The adapter's samples differ from the bare base's under the very same seeds.
    as_lora = [
        r.__class__(task_id=r.task_id, model="lora", sample=0, prompt=r.prompt) for r in requests
    ]
    bare_as_lora = CompletionSampler(spec(tiny_model, base_label="lora"))
    assert by_key(with_adapter.sample(as_lora)) != by_key(bare_as_lora.sample(as_lora))


@pytest.mark.slow
@pytest.mark.parametrize("load_in_4bit", [False, True])
def test_a_gguf_base_samples_completions(gguf_base, load_in_4bit) -> None:
    """evaluate --base-model x.gguf: the flow resolves it to its converted folder, actors sample."""
    import dataclasses

    from agir_retrain.tasks.models.resolve import resolve_model

    requests = sample_requests(TASKS, ["base"], samples=2)
    held = dataclasses.replace(spec(resolve_model(gguf_base)), load_in_4bit=load_in_4bit)
    first = by_key(sample_locally(held, plan_sample_batches(requests, 8)))
    assert len(first) == 6
    assert len(set(first.values())) == 6  # each (task, sample) its own text
    assert by_key(sample_locally(held, plan_sample_batches(requests, 1))) == first


@pytest.mark.slow
def test_unknown_model_is_refused(tiny_model: str) -> None:
    sampler = CompletionSampler(spec(tiny_model))
    (request,) = sample_requests(TASKS[:1], ["other"], samples=1)
    with pytest.raises(ValueError, match="not held here"):
        sampler.sample([request])


@pytest.mark.slow
@pytest.mark.integration
def test_actor_pool_gives_the_local_completions(tiny_model: str, adapter: str, local_ray) -> None:
    from agir_retrain.tasks.ray_pool import sample_on_actor_pool

    requests = sample_requests(TASKS, ["base", "lora"], samples=2)
    held = spec(tiny_model, (("lora", adapter),))
    done: list[int] = []
    pooled = sample_on_actor_pool(plan_sample_batches(requests, 3), held, 2, done.append)
    assert sum(done) == 12
    assert by_key(pooled) == by_key(sample_locally(held, plan_sample_batches(requests, 4)))


@pytest.mark.integration
def test_actor_pool_the_cluster_cannot_hold_fails_at_once(tiny_model: str, local_ray) -> None:
    """A GPU actor on a GPU-less cluster is refused at once, naming the setting (no hang)."""
    import dataclasses

    from agir_retrain.tasks.errors import ConfigError
    from agir_retrain.tasks.ray_pool import sample_on_actor_pool

    requests = sample_requests(TASKS, ["base"], samples=1)
    on_a_gpu = dataclasses.replace(spec(tiny_model), gpus=1.0)
    with pytest.raises(ConfigError, match=r"sampling\.gpus_per_actor"):
        sample_on_actor_pool(plan_sample_batches(requests, 2), on_a_gpu, 2)
