"""The train flow, and ``submit``: the one place that decides where training runs.

    agir-retrain train dataset --base-model builtin:tiny --out adapter --backend local|docker|prefect

``submit`` is what every caller uses (the CLI's ``train``, this flow, and so the
``retrain`` flow and the ``train-*`` deployments): ``submit.backend`` picks ``local``
(``accelerate launch`` in a child process here), ``docker`` (the GPU image on a Docker
engine) or ``prefect`` (the ``train`` deployment on a GPU work pool, where this same flow
runs with the ``local`` backend; the dataset is uploaded to shared storage first and the
outputs fetched back into ``out``).
"""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path
from typing import Any

import orjson
from prefect import flow, get_run_logger
from prefect.artifacts import create_markdown_artifact

from agir_retrain.tasks.delivery.job_output import JobTimeoutError
from agir_retrain.tasks.delivery.remote import (
    download_folder,
    needs_shared_storage,
    remote_config,
    shared_job_folder,
)
from agir_retrain.tasks.delivery.submit import JobResult, submit_docker, submit_local
from agir_retrain.tasks.errors import ConfigError, SubmitError
from agir_retrain.tasks.filenames import METRICS_FILE
from agir_retrain.tasks.io import exists, is_url, join, read_bytes
from agir_retrain.tasks.objectives import objective
from agir_retrain.tasks.rendering import markdown_image, markdown_table
from agir_retrain.tasks.settings.submit import SubmitSettings
from agir_retrain.tasks.settings.train import TrainConfig
from agir_retrain.tasks.training.metrics import TrainingMetrics, metrics_rows

Backend = Callable[[TrainConfig, Callable[[str], None] | None], JobResult]


@flow(name="train")
def train(config: TrainConfig) -> TrainingMetrics:
    """Train on the configured backend; return the metrics (``metrics.json``)."""
    logger = get_run_logger()
    result = submit(config, on_line=logger.info)
    metrics = TrainingMetrics.from_json(orjson.loads(read_bytes(join(result.out, METRICS_FILE))))
    create_markdown_artifact(
        key="training-metrics",
        markdown=f"Adapter: `{result.out}` (base `{metrics.base_model}`)\n\n"
        + markdown_table(metrics_rows(metrics)),
        description="Training metrics",
    )
    # Plots travel inline (a data URI): the UI is served over http and cannot load file://.
    curves = [join(result.out, name) for name in objective_curves(metrics.objective)]
    create_markdown_artifact(
        key="training-curves",
        markdown="\n\n".join(
            markdown_image(Path(curve).stem, read_bytes(curve)) for curve in curves if exists(curve)
        ),
        description="Training curves",
    )
    return metrics


def objective_curves(name: str) -> tuple[str, ...]:
    """The curve files an objective's training writes (its ``curves``)."""
    return tuple(curve.file for curve in objective(name).curves)


def submit(config: TrainConfig, on_line: Callable[[str], None] | None = None) -> JobResult:
    """Run the training job where ``submit.backend`` says, and wait for it; raise if it fails.

    A window of generations (``generations.datasets``) is combined here first, so every
    backend trains from one dataset folder and the config carries the lineage; a tracker
    that cannot report from this machine stops a local job before it starts.
    """
    from agir_retrain.tasks.training.generations import prepare_window
    from agir_retrain.tasks.training.tracking import check_trackers

    if config.submit.backend == "local":  # elsewhere the trackers need only exist in the job
        check_trackers(config.tracking)  # one clear line here, not a line in the job's log
    return BACKENDS[config.submit.backend](prepare_window(config), on_line)


def gpu_job_variables(settings: SubmitSettings) -> dict[str, Any]:
    """Job variables that give the deployment's job its GPUs, by work pool type."""
    if settings.work_pool_type == "docker":  # passed to the Docker SDK's containers.create
        request = {"driver": "nvidia", "count": -1, "capabilities": [["gpu"]]}
        return {"container_create_kwargs": {"device_requests": [request]}}
    if (
        settings.work_pool_type == "kubernetes"
    ):  # container/prefect/kubernetes-gpu-job-template.json
        return {"gpus": settings.gpus_per_job}
    return {}


def submit_deployment(
    config: TrainConfig, on_line: Callable[[str], None] | None = None
) -> JobResult:
    """Ship the dataset to shared storage, run the train deployment on its pool, fetch the outputs."""
    from prefect.deployments import run_deployment
    from prefect.exceptions import ObjectNotFound
    from prefect.settings import PREFECT_API_URL

    if not PREFECT_API_URL.value():
        raise ConfigError(
            "submit.backend=prefect runs a deployment on a Prefect server: set PREFECT_API_URL "
            "(a server where `prefect deploy` registered the train deployment and a worker polls)"
        )
    shared = shared_job_folder(config) if needs_shared_storage(config) else None
    remote = remote_config(config, shared)
    emit = on_line or (lambda _line: None)
    emit(
        f"running deployment {config.submit.deployment}: dataset {remote.dataset}, out {remote.out}"
    )
    try:
        flow_run = run_deployment(
            name=config.submit.deployment,
            parameters={"config": remote.model_dump(mode="json")},
            job_variables=gpu_job_variables(config.submit),
            timeout=config.submit.timeout_s,
        )
    except ObjectNotFound as error:
        raise ConfigError(
            f"submit.deployment={config.submit.deployment!r}: no such deployment on "
            f"{PREFECT_API_URL.value()}; run `prefect deploy` first"
        ) from error
    state = flow_run.state
    if state is not None and not state.is_final():
        raise JobTimeoutError(
            f"prefect deployment {config.submit.deployment} (flow run {flow_run.id}, "
            f"still {state.name}: cancel it in the UI)",
            config.submit.timeout_s,
            state.message or "",
        )
    if state is None or not state.is_completed():
        raise SubmitError(
            f"prefect deployment {config.submit.deployment} (flow run {flow_run.id})",
            None,
            (state.message if state else None)
            or f"ended in state {state.name if state else 'unknown'}",
        )
    if not is_url(config.out):
        download_folder(remote.out, Path(config.out))
    return JobResult(returncode=0, out=config.out, log_tail=state.message or "")


BACKENDS: dict[str, Backend] = {
    "local": submit_local,
    "docker": submit_docker,
    "prefect": submit_deployment,
}
