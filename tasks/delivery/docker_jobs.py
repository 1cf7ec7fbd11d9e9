"""Run a job in a container on a Docker engine, through the Docker SDK, and leave nothing behind.

The image is built from a context and tagged by the hash of what the build would see
(the files ``.dockerignore`` admits, the Dockerfile, the build arguments), so an
unchanged context reuses the image. The container gets every GPU when the host has
some, its mounts, and its environment; its log is streamed as it runs. Its pid 1 is an
init (``--init``) that reaps orphans. It is confined: never root (the caller's uid, or
``DEFAULT_USER`` when the caller is root), no network unless the job asks, no
capabilities, no privilege gain, and memory and process limits.
A job that runs bubblewrap jails itself (episodes of an execution reward) asks for ``nested_sandbox`` and
gets exactly what bwrap needs on top, nothing more (``NESTED_SANDBOX_OPTIONS``). Before
anything starts, every read-only mount must be readable by the job's user. Whether the job
succeeds, fails or runs past its deadline, the container is removed, and so is whatever
the build left (intermediate containers, dangling layers). A failed job
raises ``SubmitError`` with the job's own exit status and last log lines; one stopped at
its deadline raises ``JobTimeoutError``.
"""

from __future__ import annotations

import hashlib
import logging
import os
import shutil
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Literal

from agir_retrain.tasks.delivery.job_output import JobTimeoutError, LogTail, follow
from agir_retrain.tasks.errors import ConfigError, SubmitError
from agir_retrain.tasks.io import sha256_file

log = logging.getLogger(__name__)

LABEL = "org.agir-retrain"  # on every image, layer and container we make
DEFAULT_USER = "1000:1000"  # the GPU image's own `agir` user; jobs of a root caller run as it
# What bubblewrap needs in a container, measured on Docker 20.10 (runc, cgroup v1), and why:
# docker's default seccomp profile refuses unshare/clone of new namespaces to a process
# without CAP_SYS_ADMIN (bwrap: "No permissions to create new namespace"), and docker
# masks parts of /proc and remounts others read-only, so the kernel refuses the fresh /proc
# of bwrap's pid namespace ("Can't mount proc on /newroot/proc"): `docker run
# --security-opt seccomp=unconfined --security-opt systempaths=unconfined`. Any one of the
# three alone is not enough. Capabilities stay dropped and no-new-privileges stays on: the
# namespaces bwrap makes are unprivileged user namespaces.
NESTED_SANDBOX_OPTIONS = ("seccomp=unconfined",)
UNMASKED_PROC = {"MaskedPaths": [], "ReadonlyPaths": []}  # systempaths=unconfined, in the API


@dataclass(frozen=True, slots=True, kw_only=True)
class Mount:
    """A host folder, or a single file, seen inside the container."""

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
    network: bool = False  # the job's own network; off unless it must download
    memory_limit: str | None = "64g"  # docker's --memory (bytes or 512m, 64g); None: no limit
    pids_limit: int | None = 4096  # docker's --pids-limit; None: no limit
    shm_size: str | None = "8g"  # /dev/shm, which torch's workers and NCCL use
    user: str | None = None  # uid:gid; None: the caller's, or DEFAULT_USER for root
    timeout_s: float = 24 * 3600
    # The job runs bubblewrap jails (episodes with the bwrap sandbox): it may make
    # unprivileged user namespaces and mount a fresh /proc (see NESTED_SANDBOX_OPTIONS)
    nested_sandbox: bool = False
    # docker run --init: a minimal init is pid 1 and reaps orphans, so none piles up as a
    # zombie under an entry point that never reaps (`accelerate launch`)
    init: bool = True


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
            digest.update(f"{relative}\0{sha256_file(str(path))}\n".encode())
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
    tail = LogTail(on_line)
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
            tail.line(line)
            if line.startswith(" ---> ") and len(line.split()) == 2:
                layers.append(line.split()[1])
        if "error" in chunk:
            error = chunk["error"]
            tail.line(error)
    if error is not None:
        _remove_layers(client, layers)
        raise SubmitError(f"docker build {tag}", None, tail.text)
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
    emit = on_line or (lambda line: log.info("%s", line))
    client = _client()
    container = None
    user, owner = _user(job)
    try:
        image, reused = build_image(client, job, emit)
        deadline = time.monotonic() + job.timeout_s  # the build is not the job's time
        container = _create_container(client, image, job, user)
        container.start()
        tail = LogTail(emit)
        ended = follow(container.logs(stream=True, follow=True), tail, deadline)
        status = _wait(container, deadline) if ended else None
        if status is None:
            container.kill()
            raise JobTimeoutError(
                f"docker run {image} {' '.join(job.command)}", job.timeout_s, tail.text
            )
        result = DockerJobResult(
            image=image, reused_image=reused, returncode=status, log_tail=tail.text
        )
    finally:
        if container is not None:
            container.remove(force=True)
        client.images.prune(filters={"dangling": True, "label": LABEL})
        client.close()
        _give_back(job, owner)
    if result.returncode != 0:
        raise SubmitError(
            f"docker run {image} {' '.join(job.command)}", result.returncode, result.log_tail
        )
    return result


def _create_container(client: Any, image: str, job: DockerJob, user: str) -> Any:
    """Create the job's container: its confinement, mounts, GPUs and environment.

    Through the low-level API: the SDK's ``containers.create`` cannot unmask ``/proc``.
    """
    import docker

    device_requests = []
    if job.gpus == "all" or (job.gpus == "auto" and host_has_gpus(client)):
        device_requests = [docker.types.DeviceRequest(count=-1, capabilities=[["gpu"]])]
    host_config = client.api.create_host_config(
        binds={
            str(m.host.resolve()): {"bind": m.container, "mode": "ro" if m.read_only else "rw"}
            for m in job.mounts
        },
        device_requests=device_requests or None,
        network_mode=None if job.network else "none",
        mem_limit=job.memory_limit,
        memswap_limit=job.memory_limit,  # the same: no swap beyond the memory limit
        pids_limit=job.pids_limit,
        shm_size=job.shm_size,
        init=job.init,
        cap_drop=["ALL"],
        security_opt=["no-new-privileges", *security_options(job, client.info())],
    )
    if job.nested_sandbox:  # docker run's --security-opt systempaths=unconfined
        host_config.update(UNMASKED_PROC)
    created = client.api.create_container(
        image,
        command=job.command,
        environment=job.env,
        labels={LABEL: "job"},
        user=user,
        host_config=host_config,
    )
    return client.containers.get(created["Id"])


def security_options(job: DockerJob, engine: dict[str, Any]) -> list[str]:
    """The ``--security-opt`` values beyond no-new-privileges: none, unless the job nests bwrap.

    Where the engine enforces AppArmor, its docker-default profile denies mount, so a
    nested sandbox also runs unconfined by AppArmor; where it does not (as here), nothing
    is asked for it.
    """
    if not job.nested_sandbox:
        return []
    apparmor = any("name=apparmor" in option for option in engine.get("SecurityOptions") or [])
    return [*NESTED_SANDBOX_OPTIONS, *(["apparmor=unconfined"] if apparmor else [])]


def _wait(container: Any, deadline: float) -> int | None:
    """The container's exit status, or None if it still runs at the deadline."""
    import requests

    try:
        return container.wait(timeout=max(deadline - time.monotonic(), 1))["StatusCode"]
    except (requests.exceptions.ReadTimeout, requests.exceptions.ConnectionError):
        return None


def _user(job: DockerJob) -> tuple[str, tuple[int, int] | None]:
    """The job's ``uid:gid`` (never root), and the owner to give outputs back to afterwards.

    A caller who is not root runs the job as itself: mounted files stay readable and the
    outputs are its own. A root caller's job runs as ``job.user`` or ``DEFAULT_USER``; the
    writable mounts are handed to that user for the run and back to root afterwards.
    """
    for mount in job.mounts:
        if not mount.read_only:
            mount.host.mkdir(parents=True, exist_ok=True)
    caller = (os.getuid(), os.getgid())
    user = job.user or (DEFAULT_USER if caller[0] == 0 else f"{caller[0]}:{caller[1]}")
    uid, _, gid = user.partition(":")
    if uid in ("0", "root"):
        raise SubmitError("docker", None, f"refusing to run a job as root (user={user!r})")
    if caller[0] != 0:
        return user, None
    _check_readable(job, int(uid), int(gid or uid))
    for mount in job.mounts:
        if not mount.read_only:
            _chown_tree(mount.host, int(uid), int(gid or uid))
    return user, caller


def _check_readable(job: DockerJob, uid: int, gid: int) -> None:
    """Refuse, before anything starts, a read-only mount the job's user could not read.

    A root caller's job runs as another user; a model saved by ``save_pretrained`` is
    ``0600`` (root's alone), and the job would fail deep inside with a missing file.
    """
    for mount in job.mounts:
        if not mount.read_only:
            continue
        for path in [mount.host, *(mount.host.rglob("*") if mount.host.is_dir() else [])]:
            info = path.stat()
            shift = 6 if info.st_uid == uid else 3 if info.st_gid == gid else 0
            need = 0o5 if path.is_dir() else 0o4
            if (info.st_mode >> shift) & need != need:
                raise ConfigError(
                    f"{path} (mode {info.st_mode & 0o777:04o}, owner {info.st_uid}:{info.st_gid}) "
                    f"is not readable by the docker job's user {uid}:{gid}, which mounts it as "
                    f"{mount.container}: make it readable (chmod -R a+rX {mount.host})"
                )


def _give_back(job: DockerJob, owner: tuple[int, int] | None) -> None:
    """Return the writable mounts (and what the job wrote) to the caller."""
    if owner is None:
        return
    for mount in job.mounts:
        if not mount.read_only:
            _chown_tree(mount.host, *owner)


def _chown_tree(root: Path, uid: int, gid: int) -> None:
    os.chown(root, uid, gid)
    for folder, dirs, files in os.walk(root):
        for name in dirs + files:
            os.chown(os.path.join(folder, name), uid, gid, follow_symlinks=False)
