"""What each generation's stages are given: their settings, derived from ``ImproveConfig``.

Pure functions of the config and the generation's number, so the plan of a run can be
checked (and resumed) without running anything.
"""

from __future__ import annotations

from agir_retrain.tasks.evaluation.sampling import SamplerSpec
from agir_retrain.tasks.improve.layout import HELDOUT_TASKS, GenerationPaths
from agir_retrain.tasks.io import join
from agir_retrain.tasks.settings.build import BuildDatasetConfig
from agir_retrain.tasks.settings.collect import CollectConfig
from agir_retrain.tasks.settings.evaluation import EvaluateConfig
from agir_retrain.tasks.settings.generations import GenerationsSettings
from agir_retrain.tasks.settings.improve import ImproveConfig
from agir_retrain.tasks.settings.train import TrainConfig


def paths(config: ImproveConfig, number: int) -> GenerationPaths:
    """Generation ``number``'s folders."""
    return GenerationPaths(config.out, number)


def heldout_file(config: ImproveConfig) -> str:
    """The held-out tasks file every generation is judged on."""
    return join(config.out, HELDOUT_TASKS)


def collect_config(config: ImproveConfig, number: int) -> CollectConfig:
    """Collecting with generation ``number``'s model (the reference agent for 0, if asked)."""
    here = paths(config, number)
    reference = number == 0 and config.start == "reference"
    return config.collect.model_copy(
        update={
            "base_model": config.base_model,
            "adapter": None if number == 0 else here.adapter,
            "model_name": "reference" if reference else here.label,
            "policy": "reference" if reference else "model",
            # the held-out tasks are scenarios with their own strategies: collect the same way
            "strategies": "given",
            "generated": config.scenarios,
            "first_seed": config.first_seed,
            "out": here.collect,
            "environment": config.environment,
        }
    )


def build_config(config: ImproveConfig, number: int) -> BuildDatasetConfig:
    """Building generation ``number``'s dataset from the runs its model collected."""
    here = paths(config, number)
    inputs = [join(here.collect, "runs")]
    if number == 0:
        inputs += config.start_runs
    return config.build.model_copy(
        update={
            "inputs": inputs,
            "out": here.dataset,
            "base_model": config.base_model,
            "produced_by": None if number == 0 else here.adapter,
            # the reference agent is not a model: it has no evaluation to record
            "producer_evaluation": None
            if number == 0 and config.start == "reference"
            else f"{join(here.eval, 'eval.json')}#{here.label}",
        }
    )


def train_config(config: ImproveConfig, number: int) -> TrainConfig:
    """Training generation ``number``'s adapter, fresh on the base, on the datasets before it."""
    datasets = [paths(config, n).dataset for n in range(number)]
    return config.train.model_copy(
        update={
            "dataset": datasets[-1],
            "base_model": config.base_model,
            "out": paths(config, number).adapter,
            "generations": GenerationsSettings(datasets=datasets, window=config.window),
        }
    )


def evaluate_config(config: ImproveConfig, number: int, completions: str) -> EvaluateConfig:
    """Judging every model up to generation ``number`` from their held-out completions."""
    heldout = config.heldout
    return EvaluateConfig(
        tasks=heldout_file(config),
        completions=completions,
        base_model=config.base_model,
        out=paths(config, number).eval,
        samples=heldout.samples,
        temperature=heldout.temperature,
        max_new_tokens=heldout.max_new_tokens,
        seed=heldout.seed,
        bootstrap_resamples=heldout.bootstrap_resamples,
        confidence=heldout.confidence,
        environment=config.environment,
        sampling=config.sampling,
    )


def learned_from(config: ImproveConfig, number: int) -> str:
    """What generation ``number``'s adapter was trained on, in words."""
    if number == 0:
        return "-"
    sources = []
    for n in range(number):
        who = paths(config, n).label
        if n == 0 and config.start == "reference":
            who = "reference agent"
        extra = " + start_runs" if n == 0 and config.start_runs else ""
        sources.append(f"gen {n} runs ({who}{extra})")
    window = "" if config.window == "all" else f", window {config.window}"
    return "; ".join(sources) + window


def heldout_spec(config: ImproveConfig, number: int) -> SamplerSpec:
    """What generation ``number``'s held-out completions are sampled with (the base, its
    adapter if any, the held-out temperature and budget, the sampling section)."""
    from agir_retrain.tasks.models.resolve import resolve_model

    here, heldout = paths(config, number), config.heldout
    return SamplerSpec.from_pool(
        config.sampling,
        base_model=resolve_model(config.base_model),
        base_label="base",
        adapters=((here.label, here.adapter),) if number > 0 else (),
        temperature=heldout.temperature,
        max_new_tokens=heldout.max_new_tokens,
        seed=heldout.seed,
    )
