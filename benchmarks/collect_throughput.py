"""How fast `collect` plays the agent's loop: episodes and replies per second.

    .venv/bin/python benchmarks/collect_throughput.py                      # reference agent
    .venv/bin/python benchmarks/collect_throughput.py --model builtin:smollm2-135m --scenarios 8

1. The loop without a model: the reference agent plays `--scenarios` generated scenarios
   (given strategies, up to 3 attempts each), so the figure is the loop's own cost:
   waves, carried states, episodes in the sandbox, run files. Baseline in the same run: the
   same programs as plain `run_episode` calls on fresh copies (what `evaluate` pays), on the
   same number of local processes; the ratio is the loop's overhead.
2. With `--model`: the model plays the same scenarios on a local Ray actor pool (as the
   `collect` flow does); replies/s, new tokens/s (the replies re-tokenized) and the share
   of the wall time spent sampling.
Results go to stdout and to bench-out/collect_throughput.json.
"""

from __future__ import annotations

import argparse
import json
import tempfile
import time
from collections.abc import Sequence
from pathlib import Path

from agir_retrain.tasks.agent.collect import collect
from agir_retrain.tasks.agent.episodes import LocalEpisodes
from agir_retrain.tasks.agent.reference import reference_policy
from agir_retrain.tasks.environment.episode import run_episode
from agir_retrain.tasks.environment.scenario import parse_scenario
from agir_retrain.tasks.settings.collect import CollectConfig

OUT = Path(__file__).resolve().parent.parent / "bench-out"


def _config(out: str, scenarios: int, **fields: object) -> CollectConfig:
    return CollectConfig.model_validate(
        {"generated": scenarios, "first_seed": 900_000, "strategies": "given", "out": out} | fields
    )


def reference_loop(scenarios: int, workers: int) -> dict[str, float]:
    """The loop played by the reference agent, and the same programs as plain episodes."""
    with tempfile.TemporaryDirectory(prefix="collect-bench-") as out:
        config = _config(out, scenarios, policy="reference", workers=workers)
        start = time.perf_counter()
        with LocalEpisodes(config.environment, workers) as episodes:
            report = collect(config, sample=reference_policy, run_episodes=episodes)
        loop_s = time.perf_counter() - start
        lines = [
            json.loads(line)
            for path in sorted(Path(out, "attempts").rglob("*.jsonl"))
            for line in path.read_text().splitlines()
        ]
    ran = [line for line in lines if line["outcome"] not in ("ast_fail", "compile_fail")]
    start = time.perf_counter()
    _plain_episodes(ran, config, workers)
    plain_s = time.perf_counter() - start
    return {
        "scenarios": scenarios,
        "runs": report.runs_written,
        "attempts": len(lines),
        "episodes": len(ran),
        "loop_s": round(loop_s, 2),
        "loop_episodes_per_s": round(len(ran) / loop_s, 2),
        "plain_s": round(plain_s, 2),
        "plain_episodes_per_s": round(len(ran) / plain_s, 2),
        "loop_over_plain": round(loop_s / plain_s, 2),
    }


def _plain_episodes(lines: Sequence[dict], config: CollectConfig, workers: int) -> None:
    """Each attempt's program on a fresh copy of the state it started from."""
    from concurrent.futures import ProcessPoolExecutor

    jobs = [(line["reply"], line["scenario"]) for line in lines]
    with ProcessPoolExecutor(workers) as pool:
        list(pool.map(_one, jobs, [config] * len(jobs)))


def _one(job: tuple[str, dict], config: CollectConfig) -> None:
    reply, state = job
    run_episode(
        task_id="plain", model="plain", sample=0, completion=reply,
        scenario=parse_scenario(state, "state"), settings=config.environment,
    )  # fmt: skip


def model_loop(model: str, scenarios: int, workers: int, max_new_tokens: int) -> dict[str, float]:
    """The loop played by a model on a local Ray actor pool, as the collect flow plays it."""
    from transformers import AutoTokenizer

    from agir_retrain.tasks.agent.collect import sampler_spec
    from agir_retrain.tasks.evaluation.sampling import plan_sample_batches
    from agir_retrain.tasks.models.resolve import resolve_model
    from agir_retrain.tasks.ray_pool import SamplerPool, ray_session

    texts: list[str] = []
    sampling_s = 0.0
    with tempfile.TemporaryDirectory(prefix="collect-bench-") as out:
        config = _config(
            out, scenarios, base_model=model, prompts="compact", workers=workers,
            max_new_tokens=max_new_tokens,
        )  # fmt: skip
        with ray_session(None, None), SamplerPool(sampler_spec(config), 2) as pool:

            def sample(requests):  # type: ignore[no-untyped-def]
                nonlocal sampling_s
                began = time.perf_counter()
                batches = plan_sample_batches(requests, config.sampling.batch_size)
                replies = {c.task_id: c.completion for c in pool.sample(batches)}
                sampling_s += time.perf_counter() - began
                texts.extend(replies.values())
                return replies

            start = time.perf_counter()
            with LocalEpisodes(config.environment, workers) as episodes:
                report = collect(config, sample=sample, run_episodes=episodes)
            wall_s = time.perf_counter() - start
    tokenizer = AutoTokenizer.from_pretrained(resolve_model(model))
    tokens = sum(len(tokenizer(t, add_special_tokens=False)["input_ids"]) for t in texts)
    attempts = sum(report.attempts_by_outcome.values())
    return {
        "model": model,
        "scenarios": scenarios,
        "replies": len(texts),
        "attempts": attempts,
        "wall_s": round(wall_s, 1),
        "sampling_share": round(sampling_s / wall_s, 3),
        "replies_per_s": round(len(texts) / wall_s, 3),
        "new_tokens_per_s": round(tokens / sampling_s, 1),
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--scenarios", type=int, default=24)
    parser.add_argument("--workers", type=int, default=2)
    parser.add_argument(
        "--model", default=None, help="also let this model play (e.g. builtin:smollm2-135m)"
    )
    parser.add_argument("--max-new-tokens", type=int, default=256)
    args = parser.parse_args()
    results: dict[str, object] = {"reference": reference_loop(args.scenarios, args.workers)}
    print(json.dumps(results["reference"], indent=1))
    if args.model:
        results["model"] = model_loop(args.model, args.scenarios, args.workers, args.max_new_tokens)
        print(json.dumps(results["model"], indent=1))
    OUT.mkdir(exist_ok=True)
    (OUT / "collect_throughput.json").write_text(json.dumps(results, indent=1))


if __name__ == "__main__":
    main()
