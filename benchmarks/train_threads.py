"""Benchmark the training launch's CPU threads: one (what accelerate gave) against a share.

    python -m benchmarks.train_threads --model builtin:smollm2-135m --dataset DIR --steps 4

``accelerate launch`` sets OMP_NUM_THREADS=1 for a launch that is not marked CPU-only, so
on a machine without a GPU the training program computed on one core of many, until the
launch passed ``--num_cpu_threads_per_process`` (``launch.cpu_threads_per_process``; by
default the usable CPUs divided by the processes). This runs the same short SFT job through
the local backend (``submit_local``: ``accelerate launch``, the training program, TRL) once
with one thread and once with the default share, in alternating rounds, and prints the
seconds a step (the trainer's ``train_runtime`` over its steps, the first step left in: both
variants pay it alike), their ratio, and the threads each job reported. Results go to
stdout and to bench-out/train_threads.json.
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import tempfile
from pathlib import Path

from agir_retrain.tasks.delivery.submit import cpu_threads_per_process, submit_local
from agir_retrain.tasks.settings.submit import LaunchSettings
from agir_retrain.tasks.settings.train import TrainConfig

OUT = Path(__file__).resolve().parent.parent / "bench-out"


def one_job(base: TrainConfig, threads: int, out: str) -> tuple[float, int]:
    """Seconds a step and the threads the job reported, for one launch with ``threads``."""
    config = base.model_copy(
        update={"out": out, "launch": LaunchSettings(cpu_threads_per_process=threads)}
    )
    submit_local(config, on_line=lambda line: None)
    train = json.loads(Path(out, "metrics.json").read_text())["train"]
    return train["train_runtime"] / train["global_step"], train["cpu_threads"]


def main() -> None:
    """Time the two launches and print their seconds a step and ratio."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--model", default="builtin:smollm2-135m")
    parser.add_argument("--dataset", required=True, help="a built dataset folder (its sft/)")
    parser.add_argument("--steps", type=int, default=4)
    parser.add_argument("--rounds", type=int, default=2)
    parser.add_argument("--dtype", default="bfloat16")
    args = parser.parse_args()
    os.environ.pop("OMP_NUM_THREADS", None)  # the default share, not an inherited setting
    share = cpu_threads_per_process(LaunchSettings())
    base = TrainConfig.model_validate(
        {
            "objective": "sft",
            "dataset": args.dataset,
            "base_model": args.model,
            "quantize": False,
            "dtype": args.dtype,
            "sft": {"max_steps": args.steps, "gradient_checkpointing": False},
        }
    )
    seconds: dict[int, list[float]] = {1: [], share: []}
    reported: dict[int, int] = {}
    with tempfile.TemporaryDirectory(prefix="train-threads-") as scratch:
        for round_ in range(args.rounds):
            for threads in (1, share) if round_ % 2 == 0 else (share, 1):
                step, reported[threads] = one_job(base, threads, f"{scratch}/{round_}-{threads}")
                seconds[threads].append(step)
                print(f"round {round_}: {threads} thread(s): {step:.2f} s/step", flush=True)
    result = {
        "model": args.model,
        "dtype": args.dtype,
        "steps": args.steps,
        "load_average": os.getloadavg(),
        "seconds_per_step": {str(t): statistics.median(s) for t, s in seconds.items()},
        "threads_reported": {str(t): r for t, r in reported.items()},
        "speedup": statistics.median(seconds[1]) / statistics.median(seconds[share]),
    }
    print(json.dumps(result, indent=2))
    OUT.mkdir(exist_ok=True)
    (OUT / "train_threads.json").write_text(json.dumps(result, indent=2))


if __name__ == "__main__":
    main()
