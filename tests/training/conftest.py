"""Fixtures of the training tests: AGIR-shaped preference files, made without the ingest stage."""

from __future__ import annotations

import json
import random
from pathlib import Path

import pytest

from agir_retrain.tasks.synth import text


def agir_row(rng: random.Random, garbled: bool) -> dict:
    """One DPO row shaped like the dataset flow's: system, three user turns, strategies, request."""
    strategy = text.strategy(rng)
    return {
        "prompt": [
            # Short contents keep each step of the tiny model quick; the turns are the agent's.
            {"role": "system", "content": "You are an agent freeing space in `/`."},
            {"role": "user", "content": text.listing(rng, 120)},
            {"role": "user", "content": text.listing(rng, 120)},
            {"role": "user", "content": text.STRATS_REQUEST.split(". ")[0]},
            {"role": "assistant", "content": text.strategies_reply([strategy])},
            {"role": "user", "content": text.CODE_REQUEST.format(strat=strategy).split("\n")[0]},
        ],
        "chosen": [{"role": "assistant", "content": text.fenced(text.code(rng))}],
        "rejected": [
            {
                "role": "assistant",
                "content": f"garbled {rng.random()}" if garbled else text.fenced(text.code(rng)),
            }
        ],
        "garbled": garbled,
    }


def write_rows(path: Path, rows: list[dict]) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text("".join(json.dumps(row) + "\n" for row in rows))
    return path


@pytest.fixture(scope="session")
def dataset(tmp_path_factory) -> Path:
    """A dataset folder (dpo/train.jsonl, dpo/eval.jsonl) of AGIR-shaped rows, both provenances."""
    rng = random.Random(3)
    root = tmp_path_factory.mktemp("train-data")
    write_rows(root / "dpo" / "train.jsonl", [agir_row(rng, garbled=i % 2 == 0) for i in range(8)])
    write_rows(root / "dpo" / "eval.jsonl", [agir_row(rng, garbled=i % 2 == 0) for i in range(6)])
    return root


@pytest.fixture(scope="session")
def preference_rows():
    """Make AGIR-shaped DPO rows: ``preference_rows(seed, count)``, both provenances in turn."""

    def make(seed: int, count: int) -> list[dict]:
        rng = random.Random(seed)
        return [agir_row(rng, garbled=i % 2 == 0) for i in range(count)]

    return make
