"""A training run's metrics as one frozen type: written as ``metrics.json``, read back typed,
rendered by one rows function (model card, command line, Prefect artifacts).

The JSON keeps the layout earlier runs wrote (``train.global_step``, ``evaluation.<split>.
rewards/accuracies``, ...), with ``objective`` and ``data.chat`` added, so old files read.
Standard library only: the GPU machines have no orjson or polars.
"""

from __future__ import annotations

import json
import math
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

from agir_retrain.tasks.filenames import METRICS_FILE
from agir_retrain.tasks.objectives import ORIGINAL, Headline, objectives


@dataclass(frozen=True, slots=True, kw_only=True)
class ParameterSummary:
    """Trainable and total parameters, and the layers LoRA adapted."""

    trainable: int
    total: int
    trainable_percent: float
    lora_targets: tuple[str, ...]


@dataclass(frozen=True, slots=True, kw_only=True)
class SplitData:
    """What became of one split's rows before training: fitted, trimmed, dropped."""

    rows_in: int
    rows_trimmed: int
    rows_dropped: int
    rows_out: int
    dropped_by_trl: int = 0


@dataclass(frozen=True, slots=True, kw_only=True)
class ChatSummary:
    """The chat template's traits and what conforming did (None traits: string rows)."""

    system_role: bool | None = None
    consecutive_turns: bool | None = None
    conversations: int = 0
    changed: int = 0
    turns_merged: int = 0
    systems_folded: int = 0


@dataclass(frozen=True, slots=True, kw_only=True)
class DataSummary:
    """The files trained and evaluated on, and what was done to their rows."""

    train_file: str
    eval_file: str | None
    train: SplitData
    eval: SplitData
    chat: ChatSummary = field(default_factory=ChatSummary)


@dataclass(frozen=True, slots=True, kw_only=True)
class TrainSummary:
    """The trainer's own end-of-training figures; ``values`` holds every one it reported."""

    global_step: int
    train_loss: float | None = None
    train_runtime_s: float | None = None
    epoch: float | None = None
    peak_gpu_memory_bytes: int | None = None
    peak_host_memory_bytes: int | None = None  # the training process's peak RSS
    cpu_threads: int | None = None  # torch's intra-op threads in the (first) rank
    values: dict[str, float] = field(default_factory=dict)


@dataclass(frozen=True, slots=True, kw_only=True)
class EvalSplit:
    """One evaluation: its rows, its loss, and the objective's other metrics."""

    rows: int
    loss: float | None
    values: dict[str, float] = field(default_factory=dict)


@dataclass(frozen=True, slots=True, kw_only=True)
class TrackedRun:
    """Where one experiment tracker holds the run (``tracking.report_to``)."""

    tracker: str  # tensorboard, mlflow, trackio or wandb
    location: str  # relative to the adapter's folder when ``in_folder``; else a path or URI
    in_folder: bool
    project: str | None
    run_name: str
    run_id: str | None = None  # MLflow's run id
    offline: bool = False  # W&B in offline mode: `wandb sync` uploads it


TRACKER_TITLES = {
    "tensorboard": "TensorBoard",
    "mlflow": "MLflow",
    "trackio": "Trackio",
    "wandb": "Weights & Biases",
}


def tracked_in(run: TrackedRun) -> str:
    """Where one tracker holds the run, in one line (markdown)."""
    where = f"`{run.location}`" + (" in this folder" if run.in_folder else "")
    title = TRACKER_TITLES.get(run.tracker, run.tracker)
    if run.tracker == "tensorboard":
        return f"{title}: {where} (`tensorboard --logdir {run.location}`)"
    named = f"project `{run.project}`, run `{run.run_name}`"
    if run.tracker == "mlflow":
        store = f"the SQLite store {where}" if run.in_folder else where
        return f"{title}: experiment `{run.project}`, run `{run.run_name}` (id `{run.run_id}`) in {store}"
    if run.tracker == "wandb":
        mode = "offline, to upload with `wandb sync`" if run.offline else "online"
        return f"{title}: {named} ({mode}; local files {where})"
    return f"{title}: {named}, database {where}"


@dataclass(frozen=True, slots=True, kw_only=True)
class TrainingMetrics:
    """Everything a training run reports, as written to ``metrics.json``."""

    objective: str
    base_model: str
    reference: str
    quantized: bool
    world_size: int
    resumed_from_checkpoint: str | None
    parameters: ParameterSummary
    data: DataSummary
    train: TrainSummary
    evaluation: dict[str, EvalSplit]
    log_history: tuple[dict[str, Any], ...] = ()
    tracking: tuple[TrackedRun, ...] = ()

    def to_json(self) -> dict[str, Any]:
        """The JSON layout of ``metrics.json`` (non-finite numbers become null)."""
        train = self.train
        return _finite(
            {
                "objective": self.objective,
                "base_model": self.base_model,
                "reference": self.reference,
                "quantized": self.quantized,
                "world_size": self.world_size,
                "resumed_from_checkpoint": self.resumed_from_checkpoint,
                "parameters": asdict(self.parameters)
                | {"lora_targets": list(self.parameters.lora_targets)},
                "data": asdict(self.data),
                "train": {
                    **train.values,
                    "global_step": train.global_step,
                    "train_loss": train.train_loss,
                    "train_runtime": train.train_runtime_s,
                    "epoch": train.epoch,
                    **(
                        {"peak_gpu_memory_bytes": train.peak_gpu_memory_bytes}
                        if train.peak_gpu_memory_bytes is not None
                        else {}
                    ),
                    **(
                        {"peak_host_memory_bytes": train.peak_host_memory_bytes}
                        if train.peak_host_memory_bytes is not None
                        else {}
                    ),
                    **({"cpu_threads": train.cpu_threads} if train.cpu_threads is not None else {}),
                },
                "evaluation": {
                    split: {**values.values, "rows": values.rows, "loss": values.loss}
                    for split, values in self.evaluation.items()
                },
                "log_history": list(self.log_history),
                # Only when tracked: an untracked run's file keeps its earlier bytes.
                **({"tracking": [asdict(run) for run in self.tracking]} if self.tracking else {}),
            }
        )

    @classmethod
    def from_json(cls, value: dict[str, Any]) -> TrainingMetrics:
        """Read the layout ``to_json`` writes (and that of runs before ``objective`` existed)."""
        data, train = value["data"], dict(value["train"])
        known = (
            "global_step",
            "train_loss",
            "train_runtime",
            "epoch",
            "peak_gpu_memory_bytes",
            "peak_host_memory_bytes",
            "cpu_threads",
        )
        return cls(
            objective=value.get("objective", ORIGINAL),
            base_model=value["base_model"],
            reference=value["reference"],
            quantized=value["quantized"],
            world_size=value["world_size"],
            resumed_from_checkpoint=value.get("resumed_from_checkpoint"),
            parameters=ParameterSummary(
                **{
                    **value["parameters"],
                    "lora_targets": tuple(value["parameters"]["lora_targets"]),
                }
            ),
            data=DataSummary(
                train_file=data["train_file"],
                eval_file=data["eval_file"],
                train=SplitData(**_fields(SplitData, data["train"])),
                eval=SplitData(**_fields(SplitData, data["eval"])),
                chat=ChatSummary(**data.get("chat", {})),
            ),
            train=TrainSummary(
                global_step=train["global_step"],
                train_loss=train.get("train_loss"),
                train_runtime_s=train.get("train_runtime"),
                epoch=train.get("epoch"),
                peak_gpu_memory_bytes=train.get("peak_gpu_memory_bytes"),
                peak_host_memory_bytes=train.get("peak_host_memory_bytes"),
                cpu_threads=train.get("cpu_threads"),
                values={k: v for k, v in train.items() if k not in known},
            ),
            evaluation={
                split: EvalSplit(
                    rows=values["rows"],
                    loss=values.get("loss"),
                    values={k: v for k, v in values.items() if k not in ("rows", "loss")},
                )
                for split, values in value.get("evaluation", {}).items()
            },
            log_history=tuple(value.get("log_history", ())),
            tracking=tuple(TrackedRun(**run) for run in value.get("tracking", ())),
        )


def _fields(kind: type, values: dict[str, Any]) -> dict[str, Any]:
    names = set(kind.__dataclass_fields__)  # type: ignore[attr-defined]
    return {k: v for k, v in values.items() if k in names}


def _finite(value: Any) -> Any:
    """JSON has no NaN or infinity: write them as null."""
    if isinstance(value, float) and not math.isfinite(value):
        return None
    if isinstance(value, dict):
        return {k: _finite(v) for k, v in value.items()}
    if isinstance(value, list | tuple):
        return [_finite(v) for v in value]
    return value


def metrics_bytes(metrics: TrainingMetrics) -> bytes:
    """``metrics.json``'s bytes: indented, keys sorted (stable), no NaN."""
    return json.dumps(metrics.to_json(), indent=2, sort_keys=True, allow_nan=False).encode() + b"\n"


def read_metrics(location: str | Path) -> TrainingMetrics:
    """Read a run's ``metrics.json`` (a file, or the folder holding it), typed."""
    path = Path(location)
    if path.is_dir():
        path = path / METRICS_FILE
    return TrainingMetrics.from_json(json.loads(path.read_bytes()))


def headline_metrics(name: str) -> tuple[Headline, ...]:
    """The figures a reader looks at first for an objective (none for one not registered here)."""
    found = objectives().get(name)
    return found.headlines if found is not None else ()


def _number(value: float | None, spec: str) -> str:
    return "n/a" if value is None else format(value, spec)


def metrics_rows(metrics: TrainingMetrics) -> list[tuple[str, str]]:
    """The summary every renderer shows, as (what, value) rows."""
    params, data, train = metrics.parameters, metrics.data, metrics.train
    chat = data.chat
    rows = [
        ("objective / reference", f"{metrics.objective} / {metrics.reference}"),
        (
            "trainable / total parameters",
            f"{params.trainable:,} / {params.total:,} ({params.trainable_percent:.3f}%)",
        ),
        ("steps", str(train.global_step)),
        ("train loss", _number(train.train_loss, ".4f")),
        ("train time", f"{_number(train.train_runtime_s, '.1f')} s"),
        (
            "train rows in / shortened / dropped",
            f"{data.train.rows_in} / {data.train.rows_trimmed} / "
            f"{data.train.rows_dropped + data.train.dropped_by_trl}",
        ),
        (
            "eval rows in / shortened / dropped",
            f"{data.eval.rows_in} / {data.eval.rows_trimmed} / {data.eval.rows_dropped}",
        ),
    ]
    if chat.changed:
        rows.append(
            (
                "prompts conformed to the chat template",
                f"{chat.changed} of {chat.conversations} ({chat.turns_merged} turns merged, "
                f"{chat.systems_folded} system messages folded)",
            )
        )
    if train.peak_gpu_memory_bytes is not None:
        rows.append(("peak GPU memory", f"{train.peak_gpu_memory_bytes / 2**30:.2f} GiB"))
    if train.peak_host_memory_bytes is not None:
        rows.append(("peak host memory", f"{train.peak_host_memory_bytes / 2**30:.2f} GiB"))
    if train.cpu_threads is not None:
        rows.append(("CPU threads", str(train.cpu_threads)))
    rows.append(
        (
            "tracked in",
            "; ".join(tracked_in(run) for run in metrics.tracking) or "not tracked",
        )
    )
    headlines = headline_metrics(metrics.objective)
    for split, values in metrics.evaluation.items():
        figures = [f"loss {_number(values.loss, '.4f')}"] + [
            f"{h.label} {_number(values.values.get(h.key), h.spec)}" for h in headlines
        ]
        rows.append((f"eval {split} ({values.rows} rows)", ", ".join(figures)))
    return rows
