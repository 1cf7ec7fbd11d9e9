"""What the improve part measures the loop with, beside the loop's own code.

- ``sampler_spec`` and ``heldout_spec``: the ``SamplerSpec`` collecting and improve's
  held-out sampling build (the domain's own functions, which import no Prefect);
- ``Meter`` and ``TokenCount``: time and count a collection's waves, replies, episodes and
  the new tokens its sampler drew;
- ``sft_rows``: generation 0's SFT rows from a collection's attempts records, as the
  dataset's ``sft/train.jsonl`` holds them (the dataset builder needs polars);
- ``UnrunEpisodes`` and ``unjudged_reference_rows``: what stands in for episodes, and for
  the rows they would have judged, where bubblewrap cannot run.
"""

from __future__ import annotations

import json
import time
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any


def sampler_spec(config: Any) -> Any:
    """What collecting with ``config`` (a ``CollectConfig``) samples with: the collect flow's."""
    from agir_retrain.tasks.agent.collect import sampler_spec as collect_spec

    return collect_spec(config)


def heldout_spec(config: Any, number: int) -> Any:
    """What ``improve`` samples generation ``number``'s held-out completions with."""
    from agir_retrain.tasks.improve.plan import heldout_spec as improve_spec

    return improve_spec(config, number)


class Meter:
    """Times the calls of a collection's sample and episode functions, and counts their work."""

    def __init__(self) -> None:
        self.waves = self.replies = self.episodes = 0
        self.sample_s = self.episode_s = 0.0

    def sampling(self, sample: Callable[[Sequence[Any]], dict[str, str]]) -> Callable[[Sequence[Any]], dict[str, str]]:  # fmt: skip
        """``sample``, timed: one call is one wave."""

        def timed(requests: Sequence[Any]) -> dict[str, str]:
            started = time.perf_counter()
            replies = sample(requests)
            self.sample_s += time.perf_counter() - started
            self.waves += 1
            self.replies += len(requests)
            return replies

        return timed

    def running(self, run_episodes: Callable[[Sequence[Any]], list[Any]]) -> Callable[[Sequence[Any]], list[Any]]:  # fmt: skip
        """``run_episodes``, timed."""

        def timed(jobs: Sequence[Any]) -> list[Any]:
            started = time.perf_counter()
            results = run_episodes(jobs)
            self.episode_s += time.perf_counter() - started
            self.episodes += len(jobs)
            return results

        return timed


class TokenCount:
    """Counts the new tokens a ``CompletionSampler`` draws (its ``Sampler`` reports them)."""

    def __init__(self, completion_sampler: Any) -> None:
        self.tokens = 0
        inner = completion_sampler.garbler.sampler
        draw = inner.sample

        def counted(*args: Any, **kwargs: Any) -> Any:
            samples = draw(*args, **kwargs)
            self.tokens += sum(s.new_tokens for s in samples)
            return samples

        inner.sample = counted  # this instance only: the part's own sampler


class UnrunEpisodes:
    """Episodes where bubblewrap cannot run: none is run; each is the harness's, with the reason."""

    def __init__(self, reason: str) -> None:
        self.reason = reason

    def __call__(self, jobs: Sequence[Any]) -> list[Any]:
        """A not-run episode per job (``collect`` then excludes its run, with the reason)."""
        from agir_retrain.tasks.environment.carry import CarriedEpisode
        from agir_retrain.tasks.environment.contract import Episode, StoppedBy

        return [
            CarriedEpisode(
                episode=Episode(
                    task_id=job.key,
                    model=job.model,
                    sample=0,
                    code_found=True,
                    exit_code=None,
                    stopped_by=StoppedBy.HARNESS,
                    junk_bytes_total=0,
                    junk_bytes_freed=0,
                    new_bytes=0,
                    freed_share=0.0,
                    success=False,
                    seconds=0.0,
                    stdout_tail="",
                    stderr_tail=self.reason,
                    scenario=job.scenario.name,
                    note=self.reason,
                ),
                after=job.scenario,
            )
            for job in jobs
        ]


def sft_rows(collected: str) -> list[dict[str, Any]]:
    """The SFT rows of a collection: each successful attempt's prompt and reply (its
    ``attempts/`` record), as the dataset's ``sft/train.jsonl`` holds them; repeats once."""
    rows, seen = [], set()
    for record in sorted(Path(collected, "attempts").rglob("*.jsonl")):
        for line in record.read_text().splitlines():
            attempt = json.loads(line)
            if attempt["outcome"] != "success":
                continue
            completion = [{"role": "assistant", "content": attempt["reply"]}]
            key = json.dumps([attempt["prompt"], completion])
            if key in seen:
                continue
            seen.add(key)
            run_id = f"{attempt['task_id']}#{attempt['run_index']}/{attempt['strategy']}"
            rows.append({"prompt": attempt["prompt"], "completion": completion,
                         "score": attempt["freed_bytes"], "prompt_kind": "code",
                         "response_kind": "code", "run_id": run_id, "source": str(record)})  # fmt: skip
    return rows


def unjudged_reference_rows(config: Any) -> list[dict[str, Any]]:
    """Where no program can run: the reference agent's reply to each training strategy's
    first code request (``collect``'s own prompt), from its second attempt (never a
    planted mistake). Correct by construction (the suite runs them), not judged here."""
    from agir_retrain.tasks.agent.heldout import heldout_tasks
    from agir_retrain.tasks.agent.reference import reference_reply

    seeds = range(config.first_seed, config.first_seed + config.scenarios)
    rows = []
    for task in heldout_tasks(seeds, config.collect.prompts):
        name, strategy = task.task_id.split("/s")
        reply = reference_reply(f"{name}#0/code/{strategy}/2")
        rows.append({"prompt": list(task.prompt), "completion": [{"role": "assistant", "content": reply}],
                     "prompt_kind": "code", "response_kind": "code", "run_id": f"{name}#0/{strategy}",
                     "source": "reference agent, not judged"})  # fmt: skip
    return rows


def write_sft(dataset: str, rows: list[dict[str, Any]]) -> None:
    """Write ``sft/train.jsonl`` of a dataset folder."""
    folder = Path(dataset, "sft")
    folder.mkdir(parents=True, exist_ok=True)
    (folder / "train.jsonl").write_text("".join(json.dumps(r) + "\n" for r in rows))
