"""Shared storage for jobs that run on another machine: ship the dataset there, fetch outputs back.

A job on a Prefect GPU work pool cannot see this machine's folders. Before it runs, the
files it reads (its objective's training and eval files and the files its own settings
name: ``training/job_files.py``; nothing else of the dataset folder) are
uploaded to ``<shared>/dataset/``, and the job is given a config that names them there; its outputs go to ``<shared>/out`` (or to ``out`` when that is already
a URL) and are downloaded into ``out`` afterwards. ``shared`` is an fsspec URL
(``s3://...``) or a ``file://`` folder on a filesystem both machines mount.
"""

from __future__ import annotations

import logging
import posixpath
import uuid
from pathlib import Path

from agir_retrain.tasks.errors import ConfigError
from agir_retrain.tasks.io import copy_file_atomic, is_url, join, local_path
from agir_retrain.tasks.models.resolve import converts_gguf, resolve_model
from agir_retrain.tasks.settings.train import TrainConfig

log = logging.getLogger(__name__)


def upload_folder(folder: Path, target: str) -> None:
    """Copy every file under a local folder to a folder URL (each file atomically)."""
    for path in sorted(folder.rglob("*")):
        if path.is_file():
            copy_file_atomic(str(path), join(target, path.relative_to(folder).as_posix()))


def download_folder(source: str, target: Path) -> None:
    """Copy every file under a folder URL into a local folder, never outside it.

    Object keys are names chosen by whoever could write to the store: one that would land
    outside ``target`` (``..``, an absolute part) raises ``ConfigError`` before anything
    is written.
    """
    import fsspec

    fs, root = fsspec.core.url_to_fs(source)
    root = root.rstrip("/")
    base = target.resolve()
    plan = []
    for remote in sorted(fs.find(root)):
        relative = remote[len(root) + 1 :] if remote.startswith(root + "/") else remote
        parts = relative.split("/")
        local = (base / relative).resolve()
        if (
            not relative
            or relative.startswith("/")
            or ".." in parts
            or "\\" in relative
            or not local.is_relative_to(base)
        ):
            raise ConfigError(
                f"{source}: object {remote!r} would be written outside {target}; refusing "
                "to download (is the shared storage writable by others?)"
            )
        plan.append((remote, local))
    for remote, local in plan:
        local.parent.mkdir(parents=True, exist_ok=True)
        fs.get_file(remote, str(local))


def local_copy(location: str, scratch: Path) -> Path:
    """A local folder holding a location's files (downloaded into ``scratch`` when a URL)."""
    if not is_url(location):
        return Path(location)
    download_folder(location, scratch)
    return scratch


def shared_job_folder(config: TrainConfig) -> str:
    """A fresh folder for one job under ``submit.shared_storage``."""
    if not config.submit.shared_storage:
        raise ConfigError(
            f"submit.backend={config.submit.backend}: the job runs on another machine, which "
            f"cannot see {config.dataset!r} here; set submit.shared_storage to an fsspec URL both "
            "sides see (s3://bucket/agir-jobs, or file:// on a shared filesystem), or give a "
            "dataset URL and an out URL"
        )
    return join(config.submit.shared_storage, f"train-{uuid.uuid4().hex[:12]}")


def needs_shared_storage(config: TrainConfig) -> bool:
    """Whether a job elsewhere needs ``submit.shared_storage``: a local file to read, or a local out."""
    from agir_retrain.tasks.training.job_files import local_settings

    return bool(local_settings(config)) or not is_url(config.out)


def remote_config(config: TrainConfig, shared: str | None) -> TrainConfig:
    """The config a remote job runs: its input files (uploaded here if local) and out in shared storage.

    Every file the objective reads (``job_inputs``: its split, the eval file, the files its
    own settings name) is uploaded to ``<shared>/dataset/<name>``
    and the settings naming it are rewritten to the copy. ``shared`` is this job's
    folder in shared storage (``shared_job_folder``); None is allowed only when every
    file the job reads, and ``out``, already is a URL.
    """
    from agir_retrain.tasks.training.job_files import job_inputs, local_settings, relocated

    local = local_settings(config)
    if shared is None and (local or not is_url(config.out)):
        raise ConfigError(
            f"the job runs on another machine, which cannot see {', '.join(local) or 'out'} "
            "here: give submit.shared_storage, or URLs for these settings and out"
        )
    update: dict[str, object] = {
        "submit": config.submit.model_copy(update={"backend": "local"}),
        "out": config.out if is_url(config.out) or shared is None else join(shared, "out"),
    }
    if local and shared is not None:
        inputs = job_inputs(config)
        update |= relocated(
            config, inputs, lambda file: _upload(file.path, join(shared, "dataset", file.name))
        )
    base = config.base_model
    if converts_gguf(base):  # converted here, once: the job loads the folder, never the file
        base = update["base_model"] = resolve_model(base)
    if Path(local_path(base)).is_dir():
        log.warning(
            "base_model %s is a local folder: the remote job must see it at the same path "
            "(a shared filesystem); a hub id is fetched there",
            base,
        )
    return config.model_copy(update=update)


def _upload(source: str, target: str) -> str:
    """Copy a local file to shared storage; a URL is already there and is kept."""
    if is_url(source):
        return source
    log.info("uploading %s to %s", source, target)
    copy_file_atomic(source, target)
    return target if is_url(target) else posixpath.normpath(local_path(target))
