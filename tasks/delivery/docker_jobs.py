"""Run a job in a container on a Docker engine, through the Docker SDK, and leave nothing behind.

The image is built from a context and tagged by the hash of what the build would see
(the files ``.dockerignore`` admits, the Dockerfile, the build arguments), so an
unchanged context reuses the image. The container gets every GPU when the host has
some, its mounts, and its environment; its log is streamed as it runs. Whether the job
succeeds or fails, the container is removed, and so is whatever the build left
(intermediate containers, dangling layers). A failed job raises ``SubmitError`` with
the job's own exit status and last log lines.
"""

from __future__ import annotations

import collections
import hashlib
import logging
import os
import shutil
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Literal

from agir_retrain.tasks.errors import SubmitError

log = logging.getLogger(__name__)

LABEL = "org.agir-retrain"  # on every image, layer and container we make
LOG_TAIL_LINES = 40


@dataclass(frozen=True, slots=True, kw_only=True)
class Mount:
    """A host folder seen inside the container."""

    host: Path
    container: str
    read_only: bool = True


@dataclass(frozen=True, slots=True, kw_only=True)
class DockerJob:
    """What to build and run."""

    context: Path
    dockerfile: str = "Dockerfile"  # relative to the context
    build_args: dict[str, str] = field(default_factory=dict)
    build_network: str | None = None
    repository: str = "agir-retrain"
    command: list[str] = field(default_factory=list)  # arguments to the image's entry point
    mounts: tuple[Mount, ...] = ()
    env: dict[str, str] = field(default_factory=dict)
    gpus: Literal["auto", "all", "none"] = "auto"
    timeout_s: float = 24 * 3600


@dataclass(frozen=True, slots=True, kw_only=True)
class DockerJobResult:
    """A finished job: its image, whether the image was reused, its exit status and log tail."""

    image: str
    reused_image: bool
    returncode: int
    log_tail: str


def _client() -> Any:
    import docker

    try:
        client = docker.from_env()
        client.ping()
    except docker.errors.DockerException as error:
        raise SubmitError("docker", None, f"no Docker engine answers: {error}") from error
    return client


def context_hash(job: DockerJob) -> str:
    """Hash of what ``docker build`` would see: admitted files, Dockerfile, build arguments."""
    from docker.utils.build import exclude_paths

    ignore = job.context / ".dockerignore"
    patterns = [
        line.strip()
        for line in (ignore.read_text().splitlines() if ignore.exists() else [])
        if line.strip() and not line.startswith("#")
    ]
    digest = hashlib.sha256()
    for relative in sorted(exclude_paths(str(job.context), patterns, dockerfile=job.dockerfile)):
        path = job.context / relative
        if path.is_file():
            digest.update(relative.encode() + b"\0" + path.read_bytes() + b"\0")
    for key, value in sorted(job.build_args.items()):
        digest.update(f"ARG {key}={value}\n".encode())
    digest.update(f"DOCKERFILE {job.dockerfile}\n".encode())
    return digest.hexdigest()[:16]


def host_has_gpus(client: Any) -> bool:
    """Whether the engine can give containers NVIDIA GPUs."""
    runtimes = client.info().get("Runtimes", {}) or {}
    return (
        "nvidia" in runtimes
        or Path("/dev/nvidiactl").exists()
        or shutil.which("nvidia-smi") is not None
    )


def build_image(client: Any, job: DockerJob, on_line: Callable[[str], None]) -> tuple[str, bool]:
    """Build the job's image unless one for this exact context exists; return (tag, reused)."""
    import docker

    tag = f"{job.repository}:{context_hash(job)}"
    try:
        client.images.get(tag)
        log.info("reusing image %s: the build context is unchanged", tag)
        return tag, True
    except docker.errors.ImageNotFound:
        pass
    tail: collections.deque[str] = collections.deque(maxlen=LOG_TAIL_LINES)
    layers: list[str] = []  # images of finished steps: a failed build leaves them behind
    stream = client.api.build(
        path=str(job.context),
        dockerfile=job.dockerfile,
        tag=tag,
        buildargs=job.build_args,
        network_mode=job.build_network,
        labels={LABEL: "image"},
        rm=True,
        forcerm=True,  # intermediate containers go even when a step fails
        decode=True,
    )
    error = None
    for chunk in stream:  # read to the end: the engine removes the failed step's container last
        text = chunk.get("stream") or chunk.get("status") or ""
        for line in text.rstrip("\n").splitlines():
            tail.append(line)
            on_line(line)
            if line.startswith(" ---> ") and len(line.split()) == 2:
                layers.append(line.split()[1])
        if "error" in chunk:
            error = chunk["error"]
            tail.append(error)
    if error is not None:
        _remove_layers(client, layers)
        raise SubmitError(f"docker build {tag}", None, "\n".join(tail))
    return tag, False


def _remove_layers(client: Any, layers: list[str]) -> None:
    """Remove a failed build's step images, newest first; ones still in use are kept."""
    import docker

    for layer in reversed(layers):
        try:
            client.images.remove(layer)
        except docker.errors.APIError:  # in use by another image, or already gone
            continue


def run_docker_job(job: DockerJob, on_line: Callable[[str], None] | None = None) -> DockerJobResult:
    """Build (or reuse) the image, run the job, stream its log, and clean up in every case."""
    import docker

    emit = on_line or (lambda line: log.info("%s", line))
    client = _client()
    container = None
    try:
        image, reused = build_image(client, job, emit)
        device_requests = []
        if job.gpus == "all" or (job.gpus == "auto" and host_has_gpus(client)):
            device_requests = [docker.types.DeviceRequest(count=-1, capabilities=[["gpu"]])]
        container = client.containers.create(
            image=image,
            command=job.command,
            volumes={
                str(m.host.resolve()): {"bind": m.container, "mode": "ro" if m.read_only else "rw"}
                for m in job.mounts
            },
            environment=job.env,
            device_requests=device_requests or None,
            labels={LABEL: "job"},
            **_user(job),
        )
        container.start()
        tail: collections.deque[str] = collections.deque(maxlen=LOG_TAIL_LINES)
        pending = ""
        for chunk in container.logs(stream=True, follow=True):
            pending += chunk.decode(errors="replace")
            *lines, pending = pending.split("\n")
            for line in lines:
                tail.append(line)
                emit(line)
        if pending:
            tail.append(pending)
            emit(pending)
        status = container.wait(timeout=job.timeout_s)["StatusCode"]
        result = DockerJobResult(
            image=image, reused_image=reused, returncode=status, log_tail="\n".join(tail)
        )
    finally:
        if container is not None:
            container.remove(force=True)
        client.images.prune(filters={"dangling": True, "label": LABEL})
        client.close()
    if result.returncode != 0:
        raise SubmitError(
            f"docker run {image} {' '.join(job.command)}", result.returncode, result.log_tail
        )
    return result


def _user(job: DockerJob) -> dict[str, str]:
    """Run as the calling user (``--user uid:gid``): mounted files stay readable, and the
    outputs belong to whoever submitted the job rather than to the image's own user."""
    if os.name != "posix":
        return {}
    for mount in job.mounts:
        if not mount.read_only:
            mount.host.mkdir(parents=True, exist_ok=True)
    return {"user": f"{os.getuid()}:{os.getgid()}"}
