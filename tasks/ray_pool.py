"""Ray wrappers: the only `tasks/` module that imports Ray.

Plain functions and classes from other modules become remote here; resources come
from settings through ``.options()``.
"""

from __future__ import annotations

import logging
from collections.abc import Callable, Sequence

import ray
from ray.util import ActorPool

from tasks.dataset import (
    GarbleStats,
    ShardManifest,
    garble_key,
    garble_stats,
    pending_garble_requests,
    save_garbled,
)
from tasks.garble import Garbler, plan_batches
from tasks.records import GarbleRequest, GarbleResult
from tasks.settings import GarbleSettings

log = logging.getLogger(__name__)


def garble_on_actor_pool(
    batches: Sequence[list[GarbleRequest]],
    model_name: str,
    settings: GarbleSettings,
    on_batch_done: Callable[[int], None] | None = None,
) -> list[GarbleResult]:
    """Garble batches on a pool of Ray actors, each holding the base model once.

    Results come back in batch order. An actor that dies is restarted and its batch
    retried (``max_restarts``/``max_task_retries``); since each request is seeded on
    its own, a retried batch gives the same text.
    """
    if not batches:
        return []
    actor_class = ray.remote(Garbler).options(
        num_cpus=settings.cpus_per_actor,
        num_gpus=settings.gpus_per_actor,
        max_restarts=2,
        max_task_retries=2,
    )
    actors = [
        actor_class.remote(model_name, settings) for _ in range(min(settings.actors, len(batches)))
    ]
    log.info("garbling %d batches on %d actors", len(batches), len(actors))
    pool = ActorPool(actors)
    results: list[GarbleResult] = []
    try:
        for batch_results in pool.map(lambda actor, batch: actor.garble.remote(batch), batches):
            results.extend(batch_results)
            if on_batch_done:
                on_batch_done(len(batch_results))
    finally:
        for actor in actors:
            ray.kill(actor)
    return results


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
