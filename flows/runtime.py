"""Where flows run: a Prefect API for every Ray worker, and a Ray task runner from settings.

With no Prefect server configured, a flow would start a temporary server in this
process, and every Ray worker would start its own (about 10 s each). ``prefect_api``
starts one temporary server here instead and pins its URL in the settings that
Prefect sends with each task, so workers report to it. Its database is the project's
own unless the user's Prefect settings name one, and is checked before the server
starts (``prefect_database``). With ``PREFECT_API_URL`` set, it does nothing: the
configured server is used.
"""

from __future__ import annotations

import inspect
import logging
import os
from collections.abc import Iterator
from contextlib import contextmanager, nullcontext

log = logging.getLogger(__name__)

# Defaults for the embedded server; anything the user sets wins.
os.environ.setdefault("PREFECT_SERVER_EPHEMERAL_STARTUP_TIMEOUT_SECONDS", "180")
os.environ.setdefault("PREFECT_SERVER_ANALYTICS_ENABLED", "false")
os.environ.setdefault("PREFECT_LOGGING_EXTRA_LOGGERS", "agir_retrain")


@contextmanager
def prefect_api() -> Iterator[str]:
    """Yield the Prefect API URL flows in this block use, starting a local server if none is set."""
    from prefect.server.api.server import SubprocessASGIServer
    from prefect.settings import (
        PREFECT_API_URL,
        PREFECT_SERVER_DATABASE_CONNECTION_URL,
        temporary_settings,
    )

    from agir_retrain.flows.prefect_database import check_database, embedded_database

    configured = PREFECT_API_URL.value()
    if configured:
        yield configured
        return
    database = embedded_database()
    check_database(database)  # a database it cannot open fails here, in one line
    if database.ours and database.sqlite_path is not None:
        database.sqlite_path.parent.mkdir(parents=True, exist_ok=True)
    server = SubprocessASGIServer()
    # The server process takes its database from the settings in force when it starts.
    with (
        temporary_settings({PREFECT_SERVER_DATABASE_CONNECTION_URL: database.url})
        if database.ours
        else nullcontext()
    ):
        server.start()
    log.info("started a local Prefect server at %s", server.api_url)
    try:
        with temporary_settings({PREFECT_API_URL: server.api_url}):
            try:
                yield server.api_url
            finally:
                # A failed flow's logs too: sent after the server stopped, they would end the
                # output with Prefect's "Error logging to API", hiding the real cause.
                _drain_prefect_services()
    finally:
        server.stop()


def _drain_prefect_services() -> None:
    """Send buffered logs and events before the server goes, or the process waits on them."""
    from prefect.events.worker import EventsWorker
    from prefect.logging.handlers import APILogWorker
    from prefect.utilities.asyncutils import run_coro_as_sync

    async def drain() -> None:
        for worker in (APILogWorker, EventsWorker):
            result = worker.drain_all(timeout=30)
            if inspect.isawaitable(result):
                await result

    try:
        run_coro_as_sync(drain())
    except Exception:  # draining must never hide the flow's own outcome
        log.debug("draining Prefect's log and event workers failed", exc_info=True)


def ray_task_runner(address: str | None, num_cpus: int | None):
    """A Prefect task runner on Ray: a cluster at ``address`` (or RAY_ADDRESS), else a local Ray."""
    from prefect_ray import RayTaskRunner

    init_kwargs: dict = {
        "runtime_env": {"env_vars": {"PREFECT_LOGGING_EXTRA_LOGGERS": "agir_retrain"}}
    }
    if not (address or os.environ.get("RAY_ADDRESS")):
        # A Ray of our own, sized here. "local" matters: a bare ray.init() would silently join
        # any cluster a `ray start` left running on this machine.
        address = "local"
        init_kwargs |= {
            "num_cpus": num_cpus or os.cpu_count(),
            "include_dashboard": False,
            "object_store_memory": 1 << 30,
        }
    return RayTaskRunner(address=address, init_kwargs=init_kwargs)
