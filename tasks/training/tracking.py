"""Experiment tracking: the trackers checked before a model loads, told where to write, and recorded.

transformers' integration callbacks do the reporting (``report_to``, set by
``arguments.tracking_arguments``); they take where to write from environment variables,
which ``tracking_session`` sets inside the training process only, from the settings alone,
and puts back afterwards:

- TensorBoard: ``TENSORBOARD_LOGGING_DIR`` = ``<dir>/runs/<run_name>`` (``dir``: ``out``).
- MLflow: the session starts the run itself (``tracking.mlflow_uri``, else the user's
  ``MLFLOW_TRACKING_URI``, else ``sqlite:///<out>/mlflow.db``; experiment ``tracking.project``),
  so the final evaluations land in the same run and its id is known for the model card.
- Trackio: ``TRACKIO_DIR`` = ``<dir>/trackio`` (read when trackio is first imported).
- W&B: ``WANDB_DIR`` = ``<dir>``, ``WANDB_PROJECT``, and ``WANDB_MODE=offline`` when asked;
  online it needs an API key, checked here before anything loads.
"""

from __future__ import annotations

import importlib.util
import logging
import netrc
import os
from collections.abc import Iterator, Mapping
from contextlib import contextmanager
from pathlib import Path
from typing import Any
from urllib.parse import urlparse

from agir_retrain.tasks.errors import ConfigError
from agir_retrain.tasks.settings.tracking import TrackingSettings
from agir_retrain.tasks.training.arguments import run_name
from agir_retrain.tasks.training.metrics import TrackedRun

log = logging.getLogger(__name__)

# The module each tracker's callback imports, and what to install for it.
MODULES = {"tensorboard": "tensorboard", "mlflow": "mlflow", "trackio": "trackio", "wandb": "wandb"}
INSTALL = {
    "tensorboard": "tensorboard",
    "mlflow": "mlflow (or mlflow-skinny)",
    "trackio": "trackio",
    "wandb": "wandb",
}
MLFLOW_STORE = "mlflow.db"
WANDB_HOST = "https://api.wandb.ai"
OFFLINE_MODES = ("offline", "dryrun", "disabled")


def check_trackers(tracking: TrackingSettings, environ: Mapping[str, str] | None = None) -> None:
    """Stop, before any model loads, when a tracker asked for cannot report from here.

    Raises:
        ConfigError: a tracker is not installed, or W&B is online without an API key.
    """
    missing = [name for name in tracking.report_to if not _installed(name)]
    if missing:
        raise ConfigError(
            f"tracking.report_to: {', '.join(missing)} not installed where training runs: "
            f"pip install {' '.join(INSTALL[name] for name in missing)}, or leave "
            f"{'it' if len(missing) == 1 else 'them'} out of tracking.report_to"
        )
    if "wandb" in tracking.report_to and not tracking.wandb_offline:
        problem = wandb_login_problem(os.environ if environ is None else environ)
        if problem:
            raise ConfigError(problem)


def _installed(tracker: str) -> bool:
    if tracker == "tensorboard" and importlib.util.find_spec("tensorboardX") is not None:
        return True  # transformers' TensorBoard callback takes either writer
    return importlib.util.find_spec(MODULES[tracker]) is not None


def wandb_login_problem(environ: Mapping[str, str], netrc_file: str | None = None) -> str | None:
    """Why online W&B could not log in here (no WANDB_API_KEY, no netrc entry), or None.

    W&B's own lookup, without importing it: the key in the environment, else the netrc
    entry ``wandb login`` writes for the API host. Offline modes need no key.
    """
    if environ.get("WANDB_MODE", "").lower() in OFFLINE_MODES or environ.get("WANDB_API_KEY"):
        return None
    host = urlparse(environ.get("WANDB_BASE_URL", WANDB_HOST)).hostname or ""
    path = netrc_file or environ.get("NETRC") or str(Path.home() / ".netrc")
    try:
        if netrc.netrc(path).authenticators(host):
            return None
    except (OSError, netrc.NetrcParseError):
        pass
    return (
        f"tracking.report_to has wandb, but W&B has no API key here (WANDB_API_KEY, or a {host} "
        "entry in ~/.netrc from `wandb login`): set one, or set tracking.wandb_offline=true to "
        "write the run locally and `wandb sync` it later"
    )


def default_mlflow_uri(out: str) -> str:
    """The SQLite store inside the output folder (MLflow 3 refuses its old file store)."""
    return f"sqlite:///{Path(os.path.abspath(out)) / MLFLOW_STORE}"


def mlflow_uri(out: str, tracking: TrackingSettings, user_uri: str | None) -> str:
    """The MLflow store: the setting, else the user's MLFLOW_TRACKING_URI, else one in ``out``."""
    return tracking.mlflow_uri or user_uri or default_mlflow_uri(out)


def local_dir(out: str, tracking: TrackingSettings) -> Path:
    """The folder the local trackers write under (absolute: callbacks run from any folder)."""
    return Path(os.path.abspath(tracking.dir or out))


def tracker_environment(
    out: str, tracking: TrackingSettings, mlflow_store: str | None = None
) -> dict[str, str]:
    """The environment variables the asked-for trackers' callbacks read (pure)."""
    env: dict[str, str] = {}
    names = tracking.report_to
    local = local_dir(out, tracking)
    if "tensorboard" in names:
        env["TENSORBOARD_LOGGING_DIR"] = str(local / "runs" / run_name(out, tracking))
    if "mlflow" in names:
        env["MLFLOW_EXPERIMENT_NAME"] = tracking.project
        env["MLFLOW_TRACKING_URI"] = mlflow_store or mlflow_uri(out, tracking, None)
    if "trackio" in names:
        env["TRACKIO_DIR"] = str(local / "trackio")
    if "wandb" in names:
        env["WANDB_DIR"] = str(local)
        env["WANDB_PROJECT"] = tracking.project
        if tracking.wandb_offline:
            env["WANDB_MODE"] = "offline"
    return env


def tracked_runs(
    out: str,
    tracking: TrackingSettings,
    *,
    mlflow_store: str | None = None,
    mlflow_run_id: str | None = None,
) -> tuple[TrackedRun, ...]:
    """Where each tracker holds the run, for metrics.json and the model card (pure)."""
    name = run_name(out, tracking)
    local = local_dir(out, tracking)
    runs = []
    for tracker in tracking.report_to:
        project: str | None = tracking.project
        offline = False
        if tracker == "tensorboard":
            location, in_folder = _where(local / "runs" / name, out)
            project = None
        elif tracker == "mlflow":
            store = mlflow_store or mlflow_uri(out, tracking, None)
            in_folder = store == default_mlflow_uri(out)
            location = MLFLOW_STORE if in_folder else store
        elif tracker == "trackio":
            location, in_folder = _where(local / "trackio", out)
        else:
            location, in_folder = _where(local / "wandb", out)
            offline = tracking.wandb_offline
        runs.append(
            TrackedRun(
                tracker=tracker,
                location=location,
                in_folder=in_folder,
                project=project,
                run_name=name,
                run_id=mlflow_run_id if tracker == "mlflow" else None,
                offline=offline,
            )
        )
    return tuple(runs)


def _where(path: Path, out: str) -> tuple[str, bool]:
    """A path relative to the output folder when inside it (so metrics.json stays the same)."""
    try:
        return str(path.relative_to(os.path.abspath(out))), True
    except ValueError:
        return str(path), False


@contextmanager
def tracking_session(out: str, tracking: TrackingSettings) -> Iterator[tuple[TrackedRun, ...]]:
    """Point the trackers at their stores for the duration, and yield the records.

    The trackers were checked already (``check_trackers``, the program's first step). The
    variables are set in this process only and put back on exit; the MLflow run (on the
    main process) is started here and ended on exit, failed if training raised.
    """
    if not tracking.report_to:
        yield ()
        return
    store = None
    if "mlflow" in tracking.report_to:
        # MLflow's own variable, as its docs say; read here, where the run is started.
        store = mlflow_uri(out, tracking, os.environ.get("MLFLOW_TRACKING_URI"))
    env = tracker_environment(out, tracking, store)
    saved = {key: os.environ.get(key) for key in env}
    os.environ.update(env)
    run = None
    status = "FAILED"
    try:
        Path(out).mkdir(parents=True, exist_ok=True)
        if store:
            run = _start_mlflow_run(store, tracking.project, run_name(out, tracking))
        yield tracked_runs(
            out, tracking, mlflow_store=store, mlflow_run_id=run.info.run_id if run else None
        )
        status = "FINISHED"
    finally:
        if run is not None:
            import mlflow

            mlflow.end_run(status=status)
        for key, value in saved.items():
            if value is None:
                os.environ.pop(key, None)
            else:
                os.environ[key] = value
    log.info("tracked in %s", ", ".join(tracking.report_to))


def _start_mlflow_run(store: str, experiment: str, name: str) -> Any:
    """Start the run on the main process (the callback logs into an active run, never ends it)."""
    if int(os.environ.get("RANK", "0")) != 0:  # set by accelerate launch; other ranks log nothing
        return None
    import mlflow

    mlflow.set_tracking_uri(store)
    mlflow.set_experiment(experiment)
    run = mlflow.start_run(run_name=name)
    log.info("MLflow run %s (%s) in experiment %s at %s", name, run.info.run_id, experiment, store)
    return run
