"""Garbling: seeds, batching, redraws and fallback, and real samples from the tiny model."""

from __future__ import annotations

import pytest

from agir_retrain.tasks.dataset.garble import (
    Garbler,
    corrupt,
    garble_requests,
    garble_seed,
    issue_order,
    plan_batches,
    trim_message,
)
from agir_retrain.tasks.records import GarbleMethod, Message, PromptKind, Role
from agir_retrain.tasks.runs.pairing import pair_run
from agir_retrain.tasks.runs.reader import read_run_file
from agir_retrain.tasks.settings.models import GarbleSettings


def _requests(data_file):
    runs = (
        read_run_file(data_file("v4_kib.json")).runs
        + read_run_file(data_file("success_no_space.json")).runs
    )
    requests = []
    for run in runs:
        pending = [(p.prompt_kind, p.chosen) for p in pair_run(run).pairs if p.rejected is None]
        requests += garble_requests(run, pending)
    return requests


class TestPlanning:
    def test_seed_depends_on_run_kind_and_draw_only(self):
        seed = garble_seed(0, "f#1", PromptKind.CODE, 0)
        assert seed == garble_seed(0, "f#1", PromptKind.CODE, 0)
        others = {
            garble_seed(1, "f#1", PromptKind.CODE, 0),
            garble_seed(0, "f#2", PromptKind.CODE, 0),
            garble_seed(0, "f#1", PromptKind.STRATEGY, 0),
            garble_seed(0, "f#1", PromptKind.CODE, 1),
        }
        assert seed not in others
        assert len(others) == 4

    def test_requests_carry_the_prompt_of_their_kind(self, data_file):
        run = read_run_file(data_file("v4_kib.json")).runs[0]  # first_try
        strat, code = garble_requests(run, [(p.prompt_kind, p.chosen) for p in pair_run(run).pairs])
        assert (strat.request_id, strat.prompt, strat.chosen) == (
            f"{run.run_id}/strategy",
            run.strategy_prompt,
            run.strategy,
        )
        assert code.prompt == run.code_prompt

    def test_batches_sorted_by_length_and_independent_of_input_order(self, data_file):
        requests = _requests(data_file)
        batches = plan_batches(requests, 2)
        assert [len(b) for b in batches] == [2] * (len(requests) // 2) + [1] * (len(requests) % 2)
        assert plan_batches(list(reversed(requests)), 2) == batches
        lengths = [
            sum(len(m.content) for m in r.prompt) + len(r.chosen) for b in batches for r in b
        ]
        assert lengths == sorted(lengths)

    def test_batches_are_issued_longest_first(self, data_file):
        batches = plan_batches(_requests(data_file), 2)
        order = issue_order(batches)
        assert sorted(order) == list(range(len(batches)))
        longest = [max(len(r.chosen) for r in batches[i]) for i in order]
        assert longest == sorted(longest, reverse=True)
        assert issue_order([]) == []

    def test_trim_keeps_both_ends(self):
        text = "a" * 50 + "b" * 50
        trimmed = trim_message(text, 20)
        assert trimmed.startswith("a" * 10)
        assert trimmed.endswith("b" * 10)
        assert "80 characters cut" in trimmed
        assert trim_message("short", 20) == "short"


class TestCorrupt:
    @pytest.mark.parametrize(
        "text", ["print('x')\nprint('y')", "one two three", "ab", "aaaa", "", "x"]
    )
    def test_never_equal_and_never_empty(self, text):
        garbled = corrupt(text, 7)
        assert garbled.strip()
        assert garbled.strip() != text.strip()
        assert corrupt(text, 7) == garbled  # deterministic


class _ScriptedGarbler(Garbler):
    """Garbler whose sampler returns scripted texts: tests the redraw policy alone."""

    def __init__(self, settings, script):  # no model: sample() is replaced
        self.settings = settings
        self.script = script
        self.calls = []

    def sample(self, requests, seeds):
        self.calls.append(list(seeds))
        return [(self.script.pop(0), 3) for _ in requests]


class TestRedraws:
    def test_empty_or_identical_samples_are_drawn_again_with_the_next_seed(self):
        request = _request()
        garbler = _ScriptedGarbler(GarbleSettings(max_redraws=3), ["", "  chosen text ", "fresh"])
        (result,) = garbler.garble([request])
        assert (result.rejected, result.garble_method, result.draws) == (
            "fresh",
            GarbleMethod.MODEL,
            3,
        )
        assert [c[0] for c in garbler.calls] == [
            garble_seed(0, request.run_id, request.prompt_kind, d) for d in range(3)
        ]
        assert result.seed == garbler.calls[-1][0]

    def test_progress_counts_each_request_once_when_it_is_settled(self):
        first, second = _request(), _request("f#1")
        garbler = _ScriptedGarbler(GarbleSettings(max_redraws=1), ["fresh", "", ""])
        settled: list[int] = []
        garbler.on_progress = settled.append
        results = garbler.garble([first, second])
        assert [r.garble_method for r in results] == [GarbleMethod.MODEL, GarbleMethod.FALLBACK]
        assert settled == [1, 1]  # the first after draw 0; the second at its fallback

    def test_fallback_after_the_last_draw(self):
        request = _request()
        garbler = _ScriptedGarbler(GarbleSettings(max_redraws=1), ["", ""])
        (result,) = garbler.garble([request])
        assert result.garble_method is GarbleMethod.FALLBACK
        assert result.draws == 2
        assert result.rejected.strip()
        assert result.rejected != request.chosen


def _run(run_id="f#0"):
    from agir_retrain.tasks.records import (
        Attempt,
        Outcome,
        Run,
        RunClass,
        UnitConvention,
    )

    prompt = (Message(role=Role.USER, content="do it"),)
    return Run(
        run_id=run_id, source="f.json", copy_index=0, file_schema="v4", model_name=None,
        strategy="s", conversation=prompt, strategy_turns=1, code_turns=1, env_getter_prompt=(),
        attempts=(Attempt(index=0, outcome=Outcome.SUCCESS, message="chosen text", code=None),),
        space_freed_raw=1.0, space_freed_bytes=1024.0, unit_convention=UnitConvention.KIB_NEW_MINUS_OLD,
        run_class=RunClass.FIRST_TRY, class_reason="first_attempt_succeeded", class_detail="",
    )  # fmt: skip


def _request(run_id="f#0"):
    return garble_requests(_run(run_id), [(PromptKind.CODE, "chosen text")])[0]


@pytest.mark.slow
class TestTinyModel:
    def test_real_samples_differ_from_chosen_and_do_not_depend_on_the_batch(
        self, tiny_model, data_file
    ):
        requests = _requests(data_file)
        garbler = Garbler(tiny_model, GarbleSettings(max_new_tokens=24, batch_size=4))
        batched = {
            (r.run_id, r.prompt_kind): r
            for batch in plan_batches(requests, 4)
            for r in garbler.garble(batch)
        }
        alone = [garbler.garble([request])[0] for request in requests]
        assert [batched[(r.run_id, r.prompt_kind)] for r in alone] == alone
        for request, result in zip(requests, alone, strict=True):
            assert result.garble_method is GarbleMethod.MODEL
            assert result.rejected.strip()
            assert result.rejected != request.chosen
            assert 0 < result.new_tokens <= 24

    def test_same_seed_same_text_other_seed_other_text(self, tiny_model, data_file):
        request = _requests(data_file)[0]
        garbler = Garbler(tiny_model, GarbleSettings(max_new_tokens=16))
        first = garbler.sample([request], [1])
        assert garbler.sample([request], [1]) == first
        assert garbler.sample([request], [2]) != first


@pytest.mark.slow
@pytest.mark.parametrize("load_in_4bit", [False, True])
def test_a_gguf_base_garbles(gguf_base, data_file, load_in_4bit):
    """A .gguf base_model, resolved (converted once) as the flow does, garbles as a folder does."""
    from agir_retrain.tasks.models.resolve import resolve_model

    requests = _requests(data_file)[:3]
    settings = GarbleSettings(max_new_tokens=12, load_in_4bit=load_in_4bit)
    garbler = Garbler(resolve_model(gguf_base), settings)
    if load_in_4bit:
        assert "Linear4bit" in {type(m).__name__ for m in garbler.model.modules()}
    results = garbler.garble(requests)
    assert [r.garble_method for r in results] == [GarbleMethod.MODEL] * 3
    assert all(r.rejected.strip() and 0 < r.new_tokens <= 12 for r in results)
    assert garbler.garble(requests) == results  # seeded


def _within(seconds: float, call):
    """Run ``call`` on a daemon thread; return its result or raise its error, and fail (not hang)
    if it has not returned in time: the hang is the bug these tests guard against."""
    import threading

    outcome: dict = {}

    def run() -> None:
        try:
            outcome["result"] = call()
        except BaseException as error:  # noqa: BLE001 - handed to the test thread
            outcome["error"] = error

    worker = threading.Thread(target=run, daemon=True)
    worker.start()
    worker.join(seconds)
    assert not worker.is_alive(), f"still waiting after {seconds} s: the pool hangs"
    if "error" in outcome:
        raise outcome["error"]
    return outcome["result"]


@pytest.mark.integration
class TestPoolSizing:
    """The garble pool on the real local Ray (2 CPUs, no GPU): sized to fit, or a fast clear error."""

    def test_an_actor_no_node_can_hold_fails_fast_saying_what_to_change(self, local_ray):
        from agir_retrain.tasks.errors import ConfigError
        from agir_retrain.tasks.ray_pool import garble_on_actor_pool

        settings = GarbleSettings(gpus_per_actor=1)  # this machine has no GPU
        with pytest.raises(ConfigError, match=r"1 GPU.*0 GPU.*gpus_per_actor"):
            _within(60, lambda: garble_on_actor_pool([[_request()]] * 2, "unused", settings))

    def test_a_busy_cluster_fails_within_the_ready_timeout(self, local_ray):
        import ray

        from agir_retrain.tasks.errors import AgirError
        from agir_retrain.tasks.ray_pool import GarblerPool

        @ray.remote(num_cpus=2)
        class Holder:  # takes every CPU, as another job on a shared cluster would
            def ping(self) -> bool:
                return True

        holder = Holder.remote()
        ray.get(holder.ping.remote())
        try:
            with pytest.raises(AgirError, match=r"no actor of 1 CPU and 0 GPU started within 3 s"):
                _within(60, lambda: GarblerPool("unused", GarbleSettings(), ready_timeout_s=3))
        finally:
            ray.kill(holder)

    @pytest.mark.slow
    def test_more_actors_than_cpus_are_cut_to_fit_and_every_batch_is_garbled(
        self, local_ray, tiny_model
    ):
        from agir_retrain.tasks.ray_pool import garble_on_actor_pool

        settings = GarbleSettings(actors=5, max_new_tokens=8, batch_size=1)  # 5 x 1 CPU on 2 CPUs
        requests = [_request()] * 6
        results = _within(
            600, lambda: garble_on_actor_pool(plan_batches(requests, 1), tiny_model, settings)
        )
        assert len(results) == 6
        assert len({r.rejected for r in results}) == 1  # one request, one seed: one text


@pytest.mark.slow
@pytest.mark.integration
def test_pool_size_does_not_change_a_garbled_text(tiny_model, data_file, local_ray):
    """The same batches on one actor and on two (other batches beside them) give the same texts."""
    from agir_retrain.tasks.ray_pool import GarblerPool

    requests = _requests(data_file)
    settings = GarbleSettings(max_new_tokens=16, batch_size=3, cpus_per_actor=1)
    by_pool = []
    for actors in (1, 2):
        with GarblerPool(tiny_model, settings, actors) as pool:
            by_pool.append(pool.garble(plan_batches(requests, settings.batch_size)))
    assert by_pool[0] == by_pool[1]
    in_batch_order = [(r.run_id, r.prompt_kind) for b in plan_batches(requests, 3) for r in b]
    assert [(r.run_id, r.prompt_kind) for r in by_pool[0]] == in_batch_order
    assert all(r.garble_method is GarbleMethod.MODEL for r in by_pool[0])
