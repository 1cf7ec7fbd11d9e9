"""Run a wave's programs on local processes, each on its run's current scenario state."""

from __future__ import annotations

from collections.abc import Sequence
from concurrent.futures import ProcessPoolExecutor

from agir_retrain.tasks.agent.collect import EpisodeJob
from agir_retrain.tasks.environment.carry import CarriedEpisode, run_carried_episode
from agir_retrain.tasks.settings.environment import EnvironmentSettings


def _run(job: EpisodeJob, settings: EnvironmentSettings) -> CarriedEpisode:
    return run_carried_episode(
        task_id=job.key,
        model=job.model,
        sample=0,
        completion=job.completion,
        scenario=job.scenario,
        settings=settings,
    )


class LocalEpisodes:
    """A pool of ``workers`` processes for episodes (in this process when ``workers`` is 1)."""

    def __init__(self, settings: EnvironmentSettings, workers: int) -> None:
        self.settings = settings
        self._pool = ProcessPoolExecutor(workers) if workers > 1 else None

    def __call__(self, jobs: Sequence[EpisodeJob]) -> list[CarriedEpisode]:
        """Each job's episode, in the jobs' order."""
        if self._pool is None:
            return [_run(job, self.settings) for job in jobs]
        return list(self._pool.map(_run, jobs, [self.settings] * len(jobs)))

    def close(self) -> None:
        """Stop the worker processes."""
        if self._pool is not None:
            self._pool.shutdown()

    def __enter__(self) -> LocalEpisodes:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()
