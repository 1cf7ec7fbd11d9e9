"""Part 6: one generation of the improve loop, on the loop's own domain code, timed.

The GPU machine has no Prefect, Ray or polars, so the flow (``flows/improve.py``) and the
dataset builder cannot run there; this part runs what they wrap, each stage's settings
derived by ``tasks/improve/plan.py`` from one ``ImproveConfig``, as the flow derives them:

1. generation 0: the reference agent collects on generated training scenarios (strategies
   given; ``collect`` with ``reference_policy``, episodes in bubblewrap on local
   processes); its attempts records give the SFT rows (the successful attempts, as the
   dataset's ``sft/`` holds them), written where generation 0's dataset goes;
2. the base: the short model of real widths (``fsdp_qlora``'s and ``grpo``'s) is fitted
   briefly on a few of those rows, so that it writes programs and some reach the sandbox
   (a random model's replies never parse: nothing would run);
3. generation 1 trains: SFT steps through the training program's public ``prepare``/``run``
   (4-bit base, LoRA): training tokens/s, s/step, peak GPU memory;
4. generation 1 collects: ``collect`` with ``CompletionSampler`` (base + the new adapter,
   one sampler on the GPU, as one actor holds it) playing the agent, waves over runs,
   programs run in bubblewrap: sampling tokens/s, replies/s, waves, episodes/s, wall time;
5. the held-out tasks (``heldout_tasks``) are sampled with the adapter and with the bare
   base (adapter disabled) by the same sampler: adapter sampling speed, and its ratio.

Where bubblewrap cannot run, the probe's reason is recorded, generation 0's rows are the
reference agent's replies to each strategy's first code request (correct by construction,
not judged here), and generation 1's programs are not run: its runs end at their first
program, excluded with the reason, as ``collect`` excludes runs whose sandbox failed.
"""

from __future__ import annotations

import itertools
import shutil
import statistics
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from benchmarks.gpu_check.common import (
    Plan,
    Results,
    build_model,
    model_dir,
    peak_gb,
    release_gpu,
)
from benchmarks.gpu_check.dpo import step_timer, tokens_per_s
from benchmarks.gpu_check.grpo import fit_policy, probe_bwrap, sandbox_reason
from benchmarks.gpu_check.loop import (
    Meter,
    TokenCount,
    UnrunEpisodes,
    heldout_spec,
    sampler_spec,
    sft_rows,
    unjudged_reference_rows,
    write_sft,
)

TRAIN_FIRST_SEED = 7_000  # generated training scenarios: gen-7000 ..
HELDOUT_FIRST_SEED = 9_000  # held-out ones, never collected on


@dataclass(frozen=True, slots=True, kw_only=True)
class Sizes:
    """How much of the loop one check runs."""

    scenarios: int  # training scenarios, each played runs_per_task times
    runs_per_task: int
    new_tokens: int  # per reply: a reference program is 100-190 tokens of the tiny BPE
    batch_size: int  # replies per sampling call (a wave of 12 runs is one call)
    fit_rows: int
    fit_steps: int  # 60 leave the tiny model's programs garbled; 100 bring its loss to ~0.015
    sft_steps: int  # the first is not timed
    sft_batch: int
    heldout_scenarios: int  # 2-3 tasks each
    heldout_samples: int
    workers: int  # local processes running episodes


GPU_SIZES = Sizes(scenarios=6, runs_per_task=2, new_tokens=200, batch_size=16, fit_rows=4, fit_steps=100,
                  sft_steps=6, sft_batch=4, heldout_scenarios=4, heldout_samples=2, workers=8)  # fmt: skip
SMOKE_SIZES = Sizes(scenarios=2, runs_per_task=1, new_tokens=200, batch_size=4, fit_rows=2, fit_steps=100,
                    sft_steps=2, sft_batch=2, heldout_scenarios=1, heldout_samples=1, workers=2)  # fmt: skip


def improve_config(plan: Plan, base: str, sizes: Sizes) -> Any:
    """The loop's settings: reference start, SFT, compact prompts, one sampler on the GPU."""
    from agir_retrain.tasks.settings.collect import CollectConfig
    from agir_retrain.tasks.settings.environment import EnvironmentSettings
    from agir_retrain.tasks.settings.evaluation import SamplingPoolSettings
    from agir_retrain.tasks.settings.improve import HeldoutSettings, ImproveConfig
    from agir_retrain.tasks.settings.train import TrainConfig

    # The plan's mode, not torch: nothing here may start torch before the episode processes
    # fork (a GPU run where CUDA is missing samples on the CPU: the sampler falls back).
    on_gpu = not plan.smoke
    sampling = SamplingPoolSettings(
        batch_size=sizes.batch_size,
        actors=1,
        cpus_per_actor=1.0,
        gpus_per_actor=1.0 if on_gpu else 0.0,
        max_prompt_tokens=1536,
    )
    environment = EnvironmentSettings(limits={"wall_s": 5, "memory_mb": 256, "processes": 32, "file_size_mb": 4})  # fmt: skip
    return ImproveConfig(
        out=str(Path(plan.work) / "improve"),
        base_model=base,
        generations=1,
        start="reference",
        scenarios=sizes.scenarios,
        first_seed=TRAIN_FIRST_SEED,
        collect=CollectConfig(
            prompts="compact",
            runs_per_task=sizes.runs_per_task,
            max_new_tokens=sizes.new_tokens,
            temperature=0.7,
            workers=sizes.workers,
            sampling=sampling,
        ),
        train=TrainConfig(
            objective="sft",
            sft={
                "max_steps": sizes.sft_steps,
                "batch_size": sizes.sft_batch,
                "gradient_accumulation": 1,
                "learning_rate": 1e-4,
                "max_length": 2048,
                "logging_steps": 1,
                "save_steps": 1_000_000,
            },
        ),
        # The collection's temperature, tokens and seed: one sampler serves both (see below).
        heldout=HeldoutSettings(
            first_seed=HELDOUT_FIRST_SEED,
            scenarios=sizes.heldout_scenarios,
            samples=sizes.heldout_samples,
            temperature=0.7,
            max_new_tokens=sizes.new_tokens,
            seed=0,
        ),
        sampling=sampling,
        environment=environment,
    )


def collect_report(report: Any, meter: Meter, wall: float, *, ran: bool = True) -> dict[str, Any]:
    """A collection's figures: what it made, and where its time went (``ran``: whether its
    programs ran, or stood unrun where bubblewrap cannot run)."""
    row = {
        "runs_written": report.runs_written,
        "runs_excluded": report.runs_excluded,
        "runs_by_class": report.runs_by_class,
        "attempts_by_outcome": report.attempts_by_outcome,
        "waves": meter.waves,
        "replies": meter.replies,
        "episodes": meter.episodes if ran else 0,
        "episode_s": round(meter.episode_s, 2),
        "episodes_per_s": round(meter.episodes / meter.episode_s, 2) if ran and meter.episode_s else None,
        "collect_s": round(wall, 2),
    }  # fmt: skip
    if not ran:  # each excluded run ended at its first program, which was not run
        row["programs_not_run"] = report.runs_excluded
    return row


def collect_reference(config: Any, episodes: Callable[[Sequence[Any]], list[Any]]) -> dict[str, Any]:  # fmt: skip
    """Generation 0: the reference agent's collection, and the SFT rows its successes give."""
    from agir_retrain.tasks.agent.collect import collect
    from agir_retrain.tasks.agent.reference import reference_policy
    from agir_retrain.tasks.improve import plan

    collecting = plan.collect_config(config, 0)
    meter = Meter()
    started = time.perf_counter()
    report = collect(collecting, sample=reference_policy, run_episodes=meter.running(episodes))
    row = collect_report(report, meter, time.perf_counter() - started)
    rows = sft_rows(collecting.out)
    row |= {"sft_rows": len(rows), "policy": collecting.policy}
    write_sft(plan.paths(config, 0).dataset, rows)
    return row


def train_generation(config: Any, number: int) -> dict[str, Any]:
    """Generation ``number``'s SFT steps through the training program: speed and peak memory."""
    from agir_retrain.tasks.improve import plan
    from agir_retrain.tasks.training.program import prepare, run

    training = plan.train_config(config, number)
    before = release_gpu()
    started = time.perf_counter()
    prepared = prepare(training)
    prepare_s = time.perf_counter() - started
    timer = step_timer()
    prepared.trainer.add_callback(timer)
    result = run(prepared)
    peak = peak_gb()
    rate, tokens = tokens_per_s(prepared.trainer.state.log_history, timer.ends)
    ends = [timer.ends[step] for step in sorted(timer.ends)]
    row = {
        "steps": result.metrics.train.global_step,
        "rows": len(prepared.trainer.train_dataset),
        "tokens_per_s": rate,
        "tokens": tokens,
        # Between step ends, after the first (which holds the warm-up).
        "seconds_per_step": round(statistics.fmean(b - a for a, b in itertools.pairwise(ends)), 3),
        "train_loss": result.metrics.train.train_loss,
        "peak_gpu_memory_gb": peak,
        "allocated_before_gb": before,
        "quantized": training.quantize,
        "adapter_saved": Path(training.out, "adapter_model.safetensors").is_file(),
        "prepare_s": round(prepare_s, 1),
    }
    del prepared, result
    release_gpu()
    return row


def load_sampler(config: Any, number: int) -> tuple[Any, TokenCount, dict[str, Any]]:
    """One ``CompletionSampler`` for generation ``number``'s collection and held-out samples."""
    from agir_retrain.tasks.evaluation.sampling import CompletionSampler, SampleRequest
    from agir_retrain.tasks.improve import plan

    spec = sampler_spec(plan.collect_config(config, number))
    if spec != heldout_spec(config, number):
        raise ValueError("the collection and the held-out samples need different samplers")
    release_gpu()
    started = time.perf_counter()
    sampler = CompletionSampler(spec)
    loaded = time.perf_counter() - started
    warm = SampleRequest(task_id="warm-up", model=spec.base_label, sample=0,
                         prompt=({"role": "user", "content": "Free some space."},))  # fmt: skip
    sampler.sample([warm])  # kernels and the allocator, before anything is timed
    return sampler, TokenCount(sampler), {"load_s": round(loaded, 1), "device": str(sampler.garbler.device)}  # fmt: skip


def collect_with_model(config: Any, number: int, sampler: Any, count: TokenCount,
                       episodes: Callable[[Sequence[Any]], list[Any]]) -> dict[str, Any]:  # fmt: skip
    """Generation ``number`` collects: the model plays the agent, waves over runs."""
    from agir_retrain.tasks.agent.collect import collect
    from agir_retrain.tasks.evaluation.sampling import plan_sample_batches
    from agir_retrain.tasks.improve import plan

    collecting = plan.collect_config(config, number)

    def sample(requests: Sequence[Any]) -> dict[str, str]:  # as flows/collect.py's, one holder
        batches = plan_sample_batches(requests, collecting.sampling.batch_size)
        return {c.task_id: c.completion for batch in batches for c in sampler.sample(batch)}

    meter, tokens_before = Meter(), count.tokens
    started = time.perf_counter()
    report = collect(collecting, sample=meter.sampling(sample), run_episodes=meter.running(episodes))  # fmt: skip
    ran = not isinstance(episodes, UnrunEpisodes)
    row = collect_report(report, meter, time.perf_counter() - started, ran=ran)
    sampled = count.tokens - tokens_before
    row |= {
        "model": collecting.label(),
        "sampled_tokens": sampled,
        "sample_s": round(meter.sample_s, 2),
        "sampling_tokens_per_s": round(sampled / meter.sample_s, 1) if meter.sample_s else None,
        "replies_per_s": round(meter.replies / meter.sample_s, 2) if meter.sample_s else None,
    }
    return row


def sample_heldout(config: Any, number: int, sampler: Any, count: TokenCount) -> dict[str, Any]:
    """The held-out tasks sampled with generation ``number``'s adapter, then the bare base."""
    from agir_retrain.tasks.agent.heldout import heldout_tasks
    from agir_retrain.tasks.evaluation.sampling import plan_sample_batches, sample_requests
    from agir_retrain.tasks.improve import plan

    tasks = heldout_tasks(config.heldout.seeds(), config.collect.prompts)
    row: dict[str, Any] = {"tasks": len(tasks), "samples": config.heldout.samples}
    for label in (plan.paths(config, number).label, "base"):
        requests = sample_requests(tasks, [label], config.heldout.samples)
        tokens_before, started = count.tokens, time.perf_counter()
        for batch in plan_sample_batches(requests, config.sampling.batch_size):
            sampler.sample(batch)
        seconds, sampled = time.perf_counter() - started, count.tokens - tokens_before
        which = "adapter" if label != "base" else "base"
        row |= {f"{which}_replies": len(requests), f"{which}_tokens": sampled,
                f"{which}_tokens_per_s": round(sampled / seconds, 1)}  # fmt: skip
    row["adapter_vs_base_tokens_per_s"] = round(row["adapter_tokens_per_s"] / row["base_tokens_per_s"], 3)  # fmt: skip
    row["peak_gpu_memory_gb"] = peak_gb()
    return row


def run_improve(plan: Plan, results: Results) -> None:
    """One generation of the loop (see the module docstring), each stage's figures a row."""
    from agir_retrain.tasks.agent.episodes import LocalEpisodes

    sizes = SMOKE_SIZES if plan.smoke else GPU_SIZES
    with results.attempt("sandbox") as probe:
        probe.update(probe_bwrap())
    config = improve_config(plan, str(model_dir(plan, short=True)), sizes)
    if probe.get("runs"):
        reason = sandbox_reason(config.environment.interpreter)
    else:
        reason = probe.get("reason") or "the probe itself failed (see the sandbox row)"
    shutil.rmtree(config.out, ignore_errors=True)  # a rerun measures again: nothing resumed
    if reason:
        reason = f"bubblewrap cannot run episodes here: {reason}"
        results.add(kind="improve_episodes", status="skipped", reason=reason)
        run_generation(plan, results, config, sizes, UnrunEpisodes(reason), judged=False)
        return
    # The episode processes fork at the reference collection, before torch or CUDA starts
    # a thread here (a fork beside other threads may inherit a held lock).
    with LocalEpisodes(config.environment, sizes.workers) as episodes:
        run_generation(plan, results, config, sizes, episodes, judged=True)


def run_generation(plan: Plan, results: Results, config: Any, sizes: Sizes,
                   episodes: Callable[[Sequence[Any]], list[Any]], *, judged: bool) -> None:  # fmt: skip
    """Generation 0's rows, the fitted base, generation 1's training, collection, held-out."""
    from agir_retrain.tasks.improve import plan as stages

    with results.attempt("improve_reference", generation=0) as row:
        if judged:
            row.update(collect_reference(config, episodes))
        else:
            rows = unjudged_reference_rows(config)
            write_sft(stages.paths(config, 0).dataset, rows)
            row.update(sft_rows=len(rows), judged=False)
    if not row.get("sft_rows"):
        return  # the row says why: it failed, or no attempt succeeded
    with results.attempt("improve_base", layers=plan.short_layers) as base:
        base.update(build_model(plan, short=True))
    if base.get("folder") != config.base_model:
        return  # the row says why
    with results.attempt("improve_fit", layers=plan.short_layers) as fit:
        dataset = Path(stages.paths(config, 0).dataset)
        fit.update(fit_policy(plan, Path(config.base_model), dataset, name="improve",
                              max_rows=sizes.fit_rows, steps=sizes.fit_steps, completion_only=True))  # fmt: skip
    if "folder" not in fit:
        return
    config = config.model_copy(update={"base_model": fit["folder"]})
    with results.attempt("improve_train", generation=1) as row:
        row.update(train_generation(config, 1))
    if not row.get("adapter_saved"):
        return
    sampler = None
    with results.attempt("improve_collect", generation=1) as row:
        sampler, count, loaded = load_sampler(config, 1)
        row.update(loaded)
        row.update(collect_with_model(config, 1, sampler, count, episodes))
        row["peak_gpu_memory_gb"] = peak_gb()
    if sampler is not None:
        with results.attempt("improve_heldout", generation=1) as row:
            row.update(sample_heldout(config, 1, sampler, count))
