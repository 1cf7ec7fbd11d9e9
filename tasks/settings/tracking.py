"""Settings of experiment tracking: which trackers the training program reports to, and where."""

from __future__ import annotations

from typing import Literal

from pydantic import Field, field_validator

from agir_retrain.tasks.settings.base import Section

Tracker = Literal["tensorboard", "mlflow", "trackio", "wandb"]


class TrackingSettings(Section):
    """Where training reports its metrics as it runs (transformers' integration callbacks)."""

    report_to: list[Tracker] = Field(
        default_factory=list,
        description="Trackers that receive every logged metric (the log history of metrics.json, "
        "and the objective's own, e.g. episodes/* of an execution reward): tensorboard, mlflow, "
        "trackio, wandb; "
        "empty: none. Each must be installed where the job runs (checked before a model loads).",
    )
    run_name: str | None = Field(
        None,
        description="The run's name in every tracker (TensorBoard's folder runs/<run_name>); "
        "None: the name of the `out` folder.",
    )
    project: str = Field(
        "agir-retrain",
        description="MLflow experiment, W&B project and Trackio project the run is filed under.",
    )
    dir: str | None = Field(
        None,
        description="Local folder of the trackers that write locally: TensorBoard event files "
        "(<dir>/runs/<run_name>), the Trackio database (<dir>/trackio), offline W&B runs "
        "(<dir>/wandb); None: `out`, so they come back with the adapter from every backend.",
    )
    mlflow_uri: str | None = Field(
        None,
        description="MLflow tracking URI (http://host:5000, sqlite:///path.db, databricks); "
        "None: MLFLOW_TRACKING_URI when set, else the SQLite store mlflow.db in `out` "
        "(MLflow 3 refuses its old file store).",
    )
    wandb_offline: bool = Field(
        False,
        description="Write the W&B run under <dir>/wandb, to upload later with `wandb sync` "
        "(WANDB_MODE=offline); online, W&B needs WANDB_API_KEY or `wandb login` (checked first).",
    )

    @field_validator("report_to")
    @classmethod
    def _no_repeats(cls, value: list[str]) -> list[str]:
        repeated = sorted({name for name in value if value.count(name) > 1})
        if repeated:
            raise ValueError(f"report_to names {', '.join(repeated)} more than once")
        return value
