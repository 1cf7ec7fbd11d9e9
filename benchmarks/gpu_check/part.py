"""Run one part of the GPU check in this process (the orchestrator starts one process a part).

python -m benchmarks.gpu_check.part NAME PLAN_JSON RESULTS_JSONL LOG_DIR
"""

from __future__ import annotations

import logging
import os
import sys
from pathlib import Path

from benchmarks.gpu_check.common import Plan, Results

PARTS = ("qlora_dpo", "lora_dpo", "sampling", "fsdp_qlora", "grpo", "improve")


def run_part(name: str, plan: Plan, results: Results, logs: Path) -> None:
    """Run the named part, appending its findings to ``results``."""
    if name in ("qlora_dpo", "lora_dpo"):
        from benchmarks.gpu_check.dpo import run_dpo

        run_dpo(plan, results, quantize=name == "qlora_dpo")
    elif name == "sampling":
        from benchmarks.gpu_check.sampling import run_sampling

        run_sampling(plan, results)
    elif name == "fsdp_qlora":
        from benchmarks.gpu_check.fsdp import run_fsdp

        run_fsdp(plan, results, logs)
    elif name == "grpo":
        from benchmarks.gpu_check.grpo import run_grpo

        run_grpo(plan, results)
    elif name == "improve":
        from benchmarks.gpu_check.improve import run_improve

        run_improve(plan, results)
    else:
        raise SystemExit(f"unknown part {name!r}; parts: {', '.join(PARTS)}")


if __name__ == "__main__":
    os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")
    os.environ.setdefault("HF_HUB_OFFLINE", "1")
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(name)s: %(message)s")
    part, plan_json, results_path, log_dir = sys.argv[1:5]
    run_part(part, Plan.from_json(plan_json), Results(results_path), Path(log_dir))
