"""The sampler: each row on its own seed whatever the batch, the cache against a plain loop,
tail tokenization, the inverse-CDF draw, and the progress hook."""

from __future__ import annotations

import pytest
import torch

from agir_retrain.tasks.dataset.garble import Garbler, garble_requests
from agir_retrain.tasks.models.sampler import Sampler, _draw, encode_tails
from agir_retrain.tasks.runs.pairing import pair_run
from agir_retrain.tasks.runs.reader import read_run_file
from agir_retrain.tasks.settings.models import GarbleSettings


@pytest.fixture(scope="module")
def garbler(tiny_model):
    return Garbler(tiny_model, GarbleSettings(max_new_tokens=24))


@pytest.fixture(scope="module")
def prompts(garbler, data_file):
    """Rendered prompts of real runs, of several lengths (so batches are left-padded)."""
    runs = (
        read_run_file(data_file("v4_kib.json")).runs
        + read_run_file(data_file("success_no_space.json")).runs
    )
    requests = [
        request
        for run in runs
        for request in garble_requests(
            run, [(p.prompt_kind, p.chosen) for p in pair_run(run).pairs if p.rejected is None]
        )
    ]
    rendered = [garbler.render(r) for r in requests]
    # Short prompts too: with 64 tokens kept, real ones are all cut to the same length.
    return [*rendered[:6], "<|user|>hi<|end|><|assistant|>", "<|user|>free some space<|end|>"]


class TestDraw:
    def test_never_draws_a_token_of_probability_zero(self):
        logits = torch.tensor([[float("-inf"), 0.0, 0.0, float("-inf")]] * 4)
        uniforms = torch.tensor([0.0, 0.49, 0.51, 1.0])  # 1.0: a float64 uniform rounded up
        assert _draw(logits, uniforms, 2.0).tolist() == [1, 1, 2, 2]

    def test_inverts_the_cdf_like_a_float64_reference(self):
        generator = torch.Generator().manual_seed(3)
        logits = torch.randn(64, 1000, generator=generator) * 4
        uniforms = torch.rand(64, generator=generator)
        cdf = torch.softmax(logits.double() / 2.0, dim=-1).cumsum(-1)
        expected = (cdf <= (uniforms.double() * cdf[:, -1])[:, None]).sum(-1)
        assert torch.equal(_draw(logits, uniforms, 2.0), expected)


class TestEncodeTails:
    @pytest.mark.parametrize("chars_per_token", [1, 4, 50])  # 1: cut again and again
    def test_same_tokens_as_tokenizing_the_whole_text(self, garbler, prompts, chars_per_token):
        tokenizer = garbler.tokenizer
        whole = tokenizer(prompts, add_special_tokens=False)["input_ids"]
        for keep in (16, 64, 512):
            assert encode_tails(tokenizer, prompts, keep, chars_per_token=chars_per_token) == [
                ids[-keep:] for ids in whole
            ]


@pytest.mark.slow
class TestSampler:
    def test_a_sample_does_not_depend_on_its_batch(self, garbler, prompts):
        sampler = Sampler(garbler.model, garbler.tokenizer, garbler.device, max_prompt_tokens=64)
        seeds = [11 * i + 5 for i in range(len(prompts))]
        budgets = [8 + 3 * i for i in range(len(prompts))]  # rows finish at different steps
        together = sampler.sample(prompts, seeds, budgets, 2.0)
        for size in (1, 3):
            chunked = [
                sample
                for start in range(0, len(prompts), size)
                for sample in sampler.sample(
                    prompts[start : start + size],
                    seeds[start : start + size],
                    budgets[start : start + size],
                    2.0,
                )
            ]
            assert chunked == together
        reordered = sampler.sample(prompts[::-1], seeds[::-1], budgets[::-1], 2.0)
        assert reordered[::-1] == together
        assert [s.new_tokens for s in together] == budgets  # no EOS from this model here
        assert len({s.text for s in together}) == len(prompts)

    def test_rows_sharing_a_prompt_share_its_prefill_and_sample_as_alone(self, garbler, prompts):
        """k samples of one prompt (and a mix with other prompts) are what each row gives alone,
        while the model sees the shared prompt once."""
        sampler = Sampler(garbler.model, garbler.tokenizer, garbler.device, max_prompt_tokens=64)
        rows = [prompts[0]] * 4 + [prompts[-2], prompts[0], prompts[-1], prompts[-2]]
        seeds = [100 + i for i in range(len(rows))]
        budgets = [5, 9, 7, 9, 6, 8, 9, 4]
        shapes: list[tuple[int, ...]] = []  # of the input ids of every model call
        hook = garbler.model.register_forward_pre_hook(
            lambda _module, args, kwargs: shapes.append(tuple(kwargs["input_ids"].shape)),
            with_kwargs=True,
        )
        try:
            together = sampler.sample(rows, seeds, budgets, 2.0)
        finally:
            hook.remove()
        assert shapes[0][0] == 3  # three distinct prompts prefilled, once each
        # Then every row decodes, each leaving the batch once its budget is spent (row r
        # draws its step-k token from the pass of step k - 1; none samples EOS here).
        assert shapes[1:] == [
            (sum(budget > step for budget in budgets), 1) for step in range(1, max(budgets))
        ]
        alone = [
            sampler.sample([row], [seed], [budget], 2.0)[0]
            for row, seed, budget in zip(rows, seeds, budgets, strict=True)
        ]
        assert together == alone
        assert len({s.token_ids for s in together[:4]}) == 4  # k different samples of one prompt
        sampler.share_prefill = sampler.drop_finished = False  # the plain way: the same samples
        assert sampler.sample(rows, seeds, budgets, 2.0) == together

    def test_the_cache_gives_what_recomputing_every_step_gives(self, garbler):
        """Left-padded, cached and batched sampling against the plainest loop: one row at a
        time, no padding, no cache, the whole sequence through the model at every step."""
        sampler = Sampler(garbler.model, garbler.tokenizer, garbler.device)
        rows = [list(range(40, 45)), list(range(100, 117)), list(range(200, 240))]
        budgets, seeds = [6, 9, 12], [1, 2, 3]
        got = sampler.sample(rows, seeds, budgets, 2.0)
        with torch.inference_mode():
            for row, budget, seed, sample in zip(rows, budgets, seeds, got, strict=True):
                uniforms = torch.rand(
                    budget, generator=torch.Generator().manual_seed(seed), dtype=torch.float64
                ).float()
                sequence = list(row)
                for step in range(budget):
                    logits = garbler.model(input_ids=torch.tensor([sequence])).logits[:, -1, :]
                    sequence.append(int(_draw(logits, uniforms[step : step + 1], 2.0)))
                assert sample.token_ids == tuple(sequence[len(row) :])

    def test_stops_at_eos_and_leaves_it_out(self, garbler, prompts):
        sampler = Sampler(garbler.model, garbler.tokenizer, garbler.device, max_prompt_tokens=64)
        (free,) = sampler.sample(prompts[:1], [7], [12], 2.0)
        sampler.eos_id = free.token_ids[4]  # pretend the fifth token drawn ends the text
        stop = free.token_ids.index(sampler.eos_id)
        (cut,) = sampler.sample(prompts[:1], [7], [12], 2.0)
        assert cut.token_ids == free.token_ids[:stop]
        assert cut.text == garbler.tokenizer.decode(
            list(free.token_ids[:stop]), skip_special_tokens=True
        )

    def test_reports_rows_as_they_finish(self, garbler, prompts):
        sampler = Sampler(garbler.model, garbler.tokenizer, garbler.device, max_prompt_tokens=64)
        done: list[int] = []
        sampler.sample(prompts[:4], [1, 2, 3, 4], [3, 3, 5, 9], 2.0, on_done=done.append)
        assert done == [2, 1, 1]

    def test_bad_arguments_are_clear_errors(self, garbler):
        sampler = Sampler(garbler.model, garbler.tokenizer, garbler.device)
        with pytest.raises(ValueError, match="same length"):
            sampler.sample(["a"], [1, 2], [3], 2.0)
        with pytest.raises(ValueError, match="positive"):
            sampler.sample(["a"], [1], [0], 2.0)
        with pytest.raises(ValueError, match="at least one token"):
            sampler.sample([[]], [1], [3], 2.0)
        assert sampler.sample([], [], [], 2.0) == []
