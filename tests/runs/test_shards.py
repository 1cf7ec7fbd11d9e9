"""Shard boundaries depend on each file alone, so a grown corpus changes few shards."""

from __future__ import annotations

import random

import pytest

from agir_retrain.tasks.inputs import InputFile
from agir_retrain.tasks.runs.shards import plan_shards


def corpus(n: int, seed: int = 0) -> list[InputFile]:
    rng = random.Random(seed)
    return [
        InputFile(f"/runs/full_agent_data_{i:06d}.json", rng.randint(1, 400) * 1024)
        for i in range(n)
    ]


def test_every_file_once_in_order():
    files = corpus(500)
    shards = plan_shards(files, 2 << 20)
    assert [f for s in shards for f in s.files] == files
    assert [s.index for s in shards] == list(range(len(shards)))


def test_sizes_are_bounded():
    shards = plan_shards(corpus(2000), 2 << 20)
    assert all(s.size_bytes < 2 * (2 << 20) + 400 * 1024 for s in shards)
    assert all(s.size_bytes >= (2 << 20) // 4 for s in shards[:-1])


def test_appending_files_keeps_the_earlier_shards():
    files = corpus(1000)
    before = plan_shards(files, 2 << 20)
    after = plan_shards([*files, *corpus(1100)[1000:]], 2 << 20)
    unchanged = [s.files for s in before[:-1]]
    assert [s.files for s in after[: len(unchanged)]] == unchanged


def test_inserting_a_file_changes_few_shards():
    files = corpus(1000)
    before = {s.files for s in plan_shards(files, 2 << 20)}
    grown = [
        *files[:500],
        InputFile("/runs/full_agent_data_000499x.json", 100 * 1024),
        *files[500:],
    ]
    after = {s.files for s in plan_shards(grown, 2 << 20)}
    assert len(after - before) <= 3  # the shard it lands in, and rarely a neighbour or two


def test_target_must_be_positive():
    with pytest.raises(ValueError, match="positive"):
        plan_shards(corpus(3), 0)
