"""Content-addressed shards and garble caches: what changes a key, and what a rerun reuses."""

from __future__ import annotations

import shutil

from agir_retrain.tasks.dataset.build import build_shard, garble_key, plan_dataset
from agir_retrain.tasks.settings.models import GarbleSettings, ReadSettings
from agir_retrain.tasks.synth.corpus import write_corpus


def _corpus(tmp_path, runs=60, seed=5):
    write_corpus(tmp_path / "corpus", runs=runs, seed=seed)
    return tmp_path / "corpus" / "runs"


def test_keys_are_stable_and_follow_content(tmp_path):
    runs = _corpus(tmp_path)
    first = plan_dataset([str(runs)], str(tmp_path / "work"), 256 << 10, ReadSettings())
    again = plan_dataset([str(runs)], str(tmp_path / "work"), 256 << 10, ReadSettings())
    assert [p.key for p in first] == [p.key for p in again]
    assert len(first) > 2
    victim = first[1].shard.files[0].location
    with open(victim, "a") as handle:
        handle.write(" ")  # same JSON, other bytes
    changed = plan_dataset([str(runs)], str(tmp_path / "work"), 256 << 10, ReadSettings())
    assert [p.key != q.key for p, q in zip(first, changed, strict=True)] == [
        i == 1 for i in range(len(first))
    ]


def test_read_settings_are_part_of_the_key(tmp_path):
    runs = _corpus(tmp_path)
    default = plan_dataset([str(runs)], "w", 1 << 30, ReadSettings())
    strict = plan_dataset([str(runs)], "w", 1 << 30, ReadSettings(max_message_chars=100))
    assert default[0].key != strict[0].key


def test_grown_corpus_changes_only_the_last_shards(tmp_path):
    runs = _corpus(tmp_path, runs=120)
    before = plan_dataset([str(runs)], "w", 256 << 10, ReadSettings())
    extra = _corpus(tmp_path / "more", runs=30, seed=9)
    for path in sorted(extra.glob("full_agent_data_*.json")):  # new runs, later timestamps
        shutil.copy(path, runs / path.name.replace("2025", "2026").replace("2024", "2026"))
    after = plan_dataset([str(runs)], "w", 256 << 10, ReadSettings())
    assert [p.key for p in after[: len(before) - 1]] == [p.key for p in before[:-1]]
    assert len(after) > len(before)


def test_built_shard_is_reused(tmp_path):
    runs = _corpus(tmp_path)
    (planned,) = plan_dataset([str(runs)], str(tmp_path / "work"), 1 << 30, ReadSettings())
    first = build_shard(planned, ReadSettings())
    again = build_shard(planned, ReadSettings())
    assert (first.cached, again.cached) == (False, True)
    assert first.runs == again.runs == 60
    assert first.garble_requests == again.garble_requests > 0


def test_garble_key_ignores_placement_but_not_sampling(tiny_model):
    base = garble_key(tiny_model, GarbleSettings())
    assert garble_key(tiny_model, GarbleSettings(actors=7, batch_size=3, cpus_per_actor=2)) == base
    assert garble_key(tiny_model, GarbleSettings(temperature=1.5)) != base
    assert garble_key(tiny_model, GarbleSettings(seed=1)) != base
    assert garble_key("org/other-model", GarbleSettings()) != base
