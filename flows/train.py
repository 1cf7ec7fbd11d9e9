"""The train flow: run the QLoRA DPO training job on the chosen backend and publish its metrics.

    agir-retrain train dataset --base-model builtin:tiny --out adapter --backend local|docker|prefect

With ``submit.backend=prefect`` this flow runs the ``train`` deployment on a GPU work
pool, where the same flow runs with the ``local`` backend inside the GPU image, writing
to shared storage; the outputs are then fetched into ``out``.
"""

from __future__ import annotations

import uuid
from pathlib import Path
from typing import Any

import orjson
from prefect import flow, get_run_logger
from prefect.artifacts import create_markdown_artifact

from agir_retrain.tasks.delivery.submit import JobResult, download_folder, submit
from agir_retrain.tasks.errors import ConfigError, SubmitError
from agir_retrain.tasks.io import is_url, join, read_bytes
from agir_retrain.tasks.settings.models import SubmitSettings, TrainConfig


@flow(name="train")
def train(config: TrainConfig) -> dict[str, Any]:
    """Train on the configured backend; return the metrics (``metrics.json``)."""
    logger = get_run_logger()
    if config.submit.backend == "prefect":
        result = submit_deployment(config)
    else:
        result = submit(config, on_line=logger.info)
    metrics = orjson.loads(read_bytes(join(result.out, "metrics.json")))
    create_markdown_artifact(
        key="training-metrics",
        markdown=metrics_markdown(metrics, result.out),
        description="Training metrics",
    )
    return metrics


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


def submit_deployment(config: TrainConfig) -> JobResult:
    """Run the train deployment on its work pool, wait for it, and fetch its outputs."""
    from prefect.deployments import run_deployment

    if is_url(config.out):
        shared_out = config.out
    elif config.submit.shared_storage:
        shared_out = join(config.submit.shared_storage, f"train-{uuid.uuid4().hex[:12]}")
    else:
        raise ConfigError(
            "submit.backend=prefect: the job runs elsewhere, so out must be a URL both sides see, "
            "or set submit.shared_storage (e.g. s3://bucket/agir-runs)"
        )
    remote = config.model_copy(
        update={"out": shared_out, "submit": config.submit.model_copy(update={"backend": "local"})}
    )
    flow_run = run_deployment(
        name=config.submit.deployment,
        parameters={"config": remote.model_dump(mode="json")},
        job_variables=gpu_job_variables(config.submit),
        timeout=config.submit.timeout_s,
    )
    state = flow_run.state
    if state is None or not state.is_completed():
        raise SubmitError(
            f"prefect deployment {config.submit.deployment} (flow run {flow_run.id})",
            None,
            (state.message if state else None)
            or f"ended in state {state.name if state else 'unknown'}",
        )
    if not is_url(config.out):
        download_folder(shared_out, Path(config.out))
    return JobResult(returncode=0, out=config.out, log_tail=state.message or "")


def metrics_markdown(metrics: dict[str, Any], out: str) -> str:
    """Training metrics as markdown: parameters, data, evaluation by provenance, and the curves."""
    params, data = metrics["parameters"], metrics["data"]
    lines = [
        f"Adapter: `{out}` (base `{metrics['base_model']}`, reference `{metrics['reference']}`)",
        "",
        "| what | value |",
        "|---|---|",
        f"| trainable / total parameters | {params['trainable']:,} / {params['total']:,} |",
        f"| steps | {metrics['train']['global_step']} |",
        f"| train loss | {metrics['train'].get('train_loss', float('nan')):.4f} |",
        f"| train rows in / shortened / dropped | {data['train']['rows_in']} / {data['train']['rows_trimmed']} / {data['train']['rows_dropped']} |",
    ]
    for split, values in metrics.get("evaluation", {}).items():
        lines.append(
            f"| eval {split}: reward accuracy / margin | {values['rewards/accuracies']:.3f} / {values['rewards/margins']:.4f} |"
        )
    lines += [
        "",
        "Curves: "
        + ", ".join(
            f"`{join(out, name)}`"
            for name in ("loss.png", "reward_accuracy.png", "reward_margin.png")
        ),
    ]
    return "\n".join(lines)
