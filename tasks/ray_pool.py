"""Ray wrappers: the only `tasks/` module that imports Ray.

Plain functions and classes from other modules become remote here; resources come
from settings through ``.options()``.
"""

from __future__ import annotations

import logging
from collections.abc import Callable, Sequence

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
from agir_retrain.tasks.dataset.garble import Garbler, plan_batches
from agir_retrain.tasks.records import GarbleRequest, GarbleResult
from agir_retrain.tasks.settings.models import GarbleSettings

log = logging.getLogger(__name__)


class GarblerPool:
    """Ray actors, each holding the base model once, that garble batches in order.

    An actor that dies is restarted and its batch retried (``max_restarts`` and
    ``max_task_retries``); since each request is seeded on its own, a retried batch
    gives the same text.
    """

    def __init__(
        self, model_name: str, settings: GarbleSettings, actors: int | None = None
    ) -> None:
        actor_class = ray.remote(Garbler).options(
            num_cpus=settings.cpus_per_actor,
            num_gpus=settings.gpus_per_actor,
            max_restarts=2,
            max_task_retries=2,
        )
        count = actors if actors is not None else settings.actors
        self.actors = [actor_class.remote(model_name, settings) for _ in range(count)]
        self._pool = ActorPool(self.actors)

    def wait_ready(self) -> None:
        """Block until every actor has loaded its model."""
        ray.get([actor.__ray_ready__.remote() for actor in self.actors])

    def garble(
        self,
        batches: Sequence[list[GarbleRequest]],
        on_batch_done: Callable[[int], None] | None = None,
    ) -> list[GarbleResult]:
        """Garble batches across the actors; results come back in batch order."""
        results: list[GarbleResult] = []
        for batch_results in self._pool.map(
            lambda actor, batch: actor.garble.remote(batch), batches
        ):
            results.extend(batch_results)
            if on_batch_done:
                on_batch_done(len(batch_results))
        return results

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
    """Garble batches on a pool of at most ``settings.actors`` actors (fewer for few batches)."""
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
