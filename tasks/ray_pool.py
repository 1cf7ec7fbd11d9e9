"""Ray wrappers: the only `tasks/` module that imports Ray.

Plain functions and classes from other modules become remote here; resources come
from settings through ``.options()``.
"""

from __future__ import annotations

import logging
import os
import time
from collections.abc import Callable, Iterator, Sequence
from contextlib import contextmanager
from typing import Any

import ray
from ray.util import ActorPool

from agir_retrain.tasks.dataset.build import (
    GarbleStats,
    ShardManifest,
    garble_key,
    garble_stats,
    pending_garble_requests,
    save_garbled,
)
from agir_retrain.tasks.dataset.garble import Garbler, issue_order, plan_batches
from agir_retrain.tasks.environment.contract import Completion, Episode
from agir_retrain.tasks.errors import AgirError, ConfigError
from agir_retrain.tasks.evaluation.episodes import EpisodeGroup, run_group, sort_episodes
from agir_retrain.tasks.evaluation.sampling import CompletionSampler, SampleRequest, SamplerSpec
from agir_retrain.tasks.records import GarbleRequest, GarbleResult, PromptKind
from agir_retrain.tasks.settings.environment import EnvironmentSettings
from agir_retrain.tasks.settings.models import GarbleSettings

log = logging.getLogger(__name__)


def current_node_id() -> str | None:
    """The id of the Ray node this code runs on; None outside Ray."""
    if not ray.is_initialized():
        return None
    return ray.get_runtime_context().get_node_id()


READY_TIMEOUT_S = 900.0  # loading a large base model from disk can take minutes
_EPSILON = 1e-9


def actors_that_fit(cpus: float, gpus: float) -> int:
    """How many actors needing ``cpus`` and ``gpus`` each the cluster's alive nodes can hold at once."""
    count = 0
    for node in ray.nodes():
        if not node.get("Alive"):
            continue
        resources = node.get("Resources", {})
        fits = [int(resources.get("CPU", 0) / cpus + _EPSILON)] if cpus > 0 else []
        if gpus > 0:
            fits.append(int(resources.get("GPU", 0) / gpus + _EPSILON))
        count += min(fits) if fits else 1 << 20
    return count


def start_actors(
    make: Callable[[], Any],
    *,
    wanted: int,
    cpus: float,
    gpus: float,
    knobs: str,
    ready_timeout_s: float = READY_TIMEOUT_S,
) -> list[Any]:
    """Start as many of ``wanted`` actors as the cluster can hold, and return those that got ready.

    An actor the cluster can never place would wait forever (and a pool waits with it):
    the count is first cut to what the alive nodes can hold (none: ``ConfigError`` at
    once); then the first actor must be ready within ``ready_timeout_s`` (else
    ``AgirError``: the resources are taken by something else), and the others within a
    grace after it; those still waiting are stopped and the pool runs without them.
    """
    fit = actors_that_fit(cpus, gpus)
    shape = f"{cpus:g} CPU and {gpus:g} GPU"
    if fit == 0:
        raise ConfigError(
            f"each actor needs {shape}, and no node of the Ray cluster has that much (its "
            f"resources: {_resources(ray.cluster_resources())}); lower {knobs}, or add such nodes"
        )
    count = min(wanted, fit)
    if count < wanted:
        log.warning(
            "the Ray cluster can hold %d actors of %s, not %d: starting %d",
            fit,
            shape,
            wanted,
            count,
        )
    actors = [make() for _ in range(count)]
    ready_refs = {actor.__ray_ready__.remote(): actor for actor in actors}
    started = time.monotonic()
    ready, waiting = ray.wait(list(ready_refs), num_returns=1, timeout=ready_timeout_s)
    if not ready:
        available = _resources(ray.available_resources())
        for actor in actors:
            ray.kill(actor)
        raise AgirError(
            f"no actor of {shape} started within {ready_timeout_s:g} s (free now: {available}); "
            f"the cluster's resources are taken: wait for them, or lower {knobs}"
        )
    ray.get(ready)  # an actor that failed to load its model raises here, with its own error
    if waiting:
        grace = min(ready_timeout_s, max(30.0, 2 * (time.monotonic() - started)))
        more, waiting = ray.wait(waiting, num_returns=len(waiting), timeout=grace)
        ray.get(more)
        ready += more
    for ref in waiting:
        log.warning("an actor of %s did not start within the grace; running without it", shape)
        ray.kill(ready_refs[ref])
    return [ready_refs[ref] for ref in ready]


def _resources(resources: dict[str, float]) -> str:
    return ", ".join(f"{resources.get(name, 0):g} {name}" for name in ("CPU", "GPU"))


class GarblerPool:
    """Ray actors, each holding the base model once, that garble batches in order.

    An actor that dies is restarted and its batch retried (``max_restarts`` and
    ``max_task_retries``); since each request is seeded on its own, a retried batch
    gives the same text.
    """

    def __init__(
        self,
        model_name: str,
        settings: GarbleSettings,
        actors: int | None = None,
        ready_timeout_s: float = READY_TIMEOUT_S,
    ) -> None:
        actor_class = ray.remote(Garbler).options(
            num_cpus=settings.cpus_per_actor,
            num_gpus=settings.gpus_per_actor,
            max_restarts=2,
            max_task_retries=2,
        )
        self.actors = start_actors(
            lambda: actor_class.remote(model_name, settings),
            wanted=actors if actors is not None else settings.actors,
            cpus=settings.cpus_per_actor,
            gpus=settings.gpus_per_actor,
            knobs="build.garble.actors, cpus_per_actor or gpus_per_actor",
            ready_timeout_s=ready_timeout_s,
        )
        self._pool = ActorPool(self.actors)

    def wait_ready(self) -> None:
        """Block until every actor has loaded its model (``start_actors`` already waited)."""
        ray.get([actor.__ray_ready__.remote() for actor in self.actors])

    def garble(
        self,
        batches: Sequence[list[GarbleRequest]],
        on_batch_done: Callable[[int], None] | None = None,
    ) -> list[GarbleResult]:
        """Garble batches across the actors, longest first; results come back in batch order.

        An actor takes the next batch as soon as it is free (``ActorPool.map`` held a free
        actor until every batch before its own had come back).
        """
        by_request: dict[tuple[str, PromptKind], GarbleResult] = {}
        for batch_results in self._pool.map_unordered(
            lambda actor, index: actor.garble.remote(batches[index]), issue_order(batches)
        ):
            by_request.update({(r.run_id, r.prompt_kind): r for r in batch_results})
            if on_batch_done:
                on_batch_done(len(batch_results))
        return [by_request[(q.run_id, q.prompt_kind)] for batch in batches for q in batch]

    def close(self) -> None:
        """Stop the actors."""
        for actor in self.actors:
            ray.kill(actor)

    def __enter__(self) -> GarblerPool:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()


def garble_on_actor_pool(
    batches: Sequence[list[GarbleRequest]],
    model_name: str,
    settings: GarbleSettings,
    on_batch_done: Callable[[int], None] | None = None,
) -> list[GarbleResult]:
    """Garble batches on a pool of at most ``settings.actors`` actors (fewer for few batches,
    or when the cluster cannot hold that many; see ``start_actors``)."""
    if not batches:
        return []
    actors = min(settings.actors, len(batches))
    log.info("garbling %d batches on %d actors", len(batches), actors)
    with GarblerPool(model_name, settings, actors) as pool:
        return pool.garble(batches, on_batch_done)


def garble_shards(
    manifests: Sequence[ShardManifest],
    model_name: str,
    settings: GarbleSettings,
    on_batch_done: Callable[[int], None] | None = None,
) -> GarbleStats:
    """Garble every request whose shard has no cached results for these settings.

    Batches are formed over all pending requests at once (sorted by length), so a
    request lands in the same batch whatever the pool size; results are cached
    beside their shards.
    """
    key = garble_key(model_name, settings)
    requests, owner = pending_garble_requests(manifests, key)
    results: list[GarbleResult] = []
    if requests:
        batches = plan_batches(requests, settings.batch_size)
        results = garble_on_actor_pool(batches, model_name, settings, on_batch_done)
        save_garbled(results, owner, key)
    return garble_stats(manifests, key, fresh=len(results))


@contextmanager
def ray_session(address: str | None, num_cpus: int | None) -> Iterator[None]:
    """Use the Ray already started here, else join ``address`` (or RAY_ADDRESS), else start one.

    Only a Ray started here is shut down on leaving.
    """
    if ray.is_initialized():
        yield
        return
    if address or os.environ.get("RAY_ADDRESS"):
        ray.init(address=address)
    else:
        # "local": a bare ray.init() would join any cluster a `ray start` left on this machine.
        ray.init(
            address="local",
            num_cpus=num_cpus or os.cpu_count(),
            include_dashboard=False,
            object_store_memory=1 << 30,
        )
    try:
        yield
    finally:
        ray.shutdown()


def sample_on_actor_pool(
    batches: Sequence[list[SampleRequest]],
    spec: SamplerSpec,
    actors: int,
    on_batch_done: Callable[[int], None] | None = None,
) -> list[Completion]:
    """Sample batches on at most ``actors`` actors, each holding the base model and adapters."""
    if not batches:
        return []
    actor_class = ray.remote(CompletionSampler).options(
        num_cpus=spec.cpus, num_gpus=spec.gpus, max_restarts=2, max_task_retries=2
    )
    # Sized to what the cluster can hold, as the garble pool is: an actor that can never be
    # placed would otherwise keep the pool waiting forever.
    holders = start_actors(
        lambda: actor_class.remote(spec),
        wanted=min(actors, len(batches)),
        cpus=spec.cpus,
        gpus=spec.gpus,
        knobs="sampling.actors, sampling.cpus_per_actor or sampling.gpus_per_actor",
    )
    log.info("sampling %d batches on %d actors", len(batches), len(holders))
    completions: list[Completion] = []
    try:
        for batch_completions in ActorPool(holders).map(
            lambda actor, batch: actor.sample.remote(batch), batches
        ):
            completions.extend(batch_completions)
            if on_batch_done:
                on_batch_done(len(batch_completions))
    finally:
        for holder in holders:
            ray.kill(holder)
    return completions


def run_episode_groups_on_ray(
    groups: Sequence[EpisodeGroup],
    settings: EnvironmentSettings,
    on_done: Callable[[int], None] | None = None,
) -> list[Episode]:
    """Run each task's episodes as one Ray task (one CPU each); episodes in canonical order."""
    remote = ray.remote(run_group).options(num_cpus=1, max_retries=2)
    pending = {remote.remote(group, settings): group for group in groups}
    episodes: list[Episode] = []
    while pending:
        done, _ = ray.wait(list(pending), num_returns=1)
        for ref in done:
            group = pending.pop(ref)
            episodes.extend(ray.get(ref))
            if on_done:
                on_done(len(group.completions))
    return sort_episodes(episodes)


class SamplerPool:
    """Sampling actors kept for many rounds (``collect``'s waves): each holds the model once.

    ``sample`` can be called again and again; the actors load the model only when the pool
    starts. Batches go to whichever actor is free; every completion is seeded on its own.
    """

    def __init__(self, spec: SamplerSpec, actors: int) -> None:
        actor_class = ray.remote(CompletionSampler).options(
            num_cpus=spec.cpus, num_gpus=spec.gpus, max_restarts=2, max_task_retries=2
        )
        self.actors = start_actors(
            lambda: actor_class.remote(spec),
            wanted=actors,
            cpus=spec.cpus,
            gpus=spec.gpus,
            knobs="sampling.actors, sampling.cpus_per_actor or sampling.gpus_per_actor",
        )
        self._pool = ActorPool(self.actors)

    def sample(
        self,
        batches: Sequence[list[SampleRequest]],
        on_batch_done: Callable[[int], None] | None = None,
    ) -> list[Completion]:
        """Sample the batches across the actors; completions in no particular order."""
        completions: list[Completion] = []
        for batch_completions in self._pool.map_unordered(
            lambda actor, batch: actor.sample.remote(batch), batches
        ):
            completions.extend(batch_completions)
            if on_batch_done:
                on_batch_done(len(batch_completions))
        return completions

    def close(self) -> None:
        """Stop the actors."""
        for actor in self.actors:
            ray.kill(actor)

    def __enter__(self) -> SamplerPool:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()
