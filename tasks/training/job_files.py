"""Which files a training job reads, and the settings that tell a job elsewhere where their copies are.

A job on another machine (a Docker container, a Prefect work pool) sees none of this
machine's folders: every file it reads is shipped (uploaded to shared storage, or
mounted read-only) and the settings naming those files are rewritten to name the
copies. Which files those are is the objective's own ``data_files`` (the function its
``load_data`` reads through), so what is shipped is what the job reads: its split's
training file (-> ``train.jsonl``), the eval file beside it or ``eval_dataset`` (->
``eval.jsonl``; none for an objective that reads no eval file), and the files its own
settings name (``SettingFile.name``: ``rehearsal.jsonl``, ``scenarios/<i>-<file>``, ...).
Nothing here names an objective: a setting is rewritten by its dotted key.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

from agir_retrain.tasks.errors import ConfigError
from agir_retrain.tasks.io import is_url
from agir_retrain.tasks.objectives import SettingFile, objective
from agir_retrain.tasks.settings.train import TrainConfig

TRAIN_NAME = "train.jsonl"
EVAL_NAME = "eval.jsonl"


@dataclass(frozen=True, slots=True, kw_only=True)
class JobFile:
    """One file a job reads: the setting naming it, where it is, and its name once shipped.

    ``name`` is relative (``train.jsonl``, ``scenarios/0-small.json``): shipped copies
    go to ``<shared>/dataset/<name>`` or are mounted at ``/data/<name>``. ``index`` is
    the entry's position when the setting is a list. ``key`` is None for a file no setting
    names (``fix`` says what to do instead of shipping it).
    """

    key: str | None
    path: str
    name: str
    index: int | None = None
    fix: str = ""


@dataclass(frozen=True, slots=True, kw_only=True)
class JobInputs:
    """Every file one training job reads: its split, and the files other settings name."""

    objective: str
    train: JobFile
    eval: JobFile | None
    extra: tuple[JobFile, ...] = ()

    @property
    def files(self) -> tuple[JobFile, ...]:
        """All of them: train, eval (if any), then the others in setting order."""
        return (self.train, *((self.eval,) if self.eval is not None else ()), *self.extra)


def job_inputs(config: TrainConfig) -> JobInputs:
    """The files a job with this config reads (pure apart from checking that they exist).

    Raises:
        DatasetError: no training file, eval file or other named file where the config says.
        ConfigError: a setting names something that is not a file it can read.
    """
    files = objective(config.objective).data_files(config)
    return JobInputs(
        objective=config.objective,
        train=JobFile(key="dataset", path=files.train, name=TRAIN_NAME),
        eval=(
            JobFile(key="eval_dataset", path=files.eval, name=EVAL_NAME)
            if files.eval is not None
            else None
        ),
        extra=tuple(_job_file(entry) for entry in files.extra),
    )


def _job_file(entry: SettingFile) -> JobFile:
    return JobFile(
        key=entry.key, path=entry.path, name=entry.name, index=entry.index, fix=entry.fix
    )


def relocated(
    config: TrainConfig, inputs: JobInputs, where: Callable[[JobFile], str]
) -> dict[str, object]:
    """The settings update that points a job at its shipped copies (``where(file)`` of each).

    Only the settings that change are in it: ``dataset``, ``eval_dataset`` (None when the
    objective reads no eval file but one was given), and each section holding a file
    setting, with its entries replaced, ready for ``config.model_copy(update=...)``.

    Raises:
        ConfigError: a file no setting names (a scenario named inside a tasks file): a job
            on another machine could not be pointed at a copy.
    """
    update: dict[str, object] = {"dataset": where(inputs.train)}
    if inputs.eval is not None:
        update["eval_dataset"] = where(inputs.eval)
    elif config.eval_dataset is not None:
        update["eval_dataset"] = None  # not read: a path here would mean nothing there
    sections: dict[str, dict[str, object]] = {}  # section -> its changed fields
    for entry in inputs.extra:
        if entry.key is None:
            raise ConfigError(f"{inputs.train.path}: {entry.fix}")
        section, _, field = entry.key.partition(".")
        changed = sections.setdefault(section, {})
        if entry.index is None:
            changed[field] = where(entry)
        else:
            values = changed.setdefault(field, list(getattr(config.section(section), field)))
            values[entry.index] = where(entry)  # type: ignore[index]
    for section, changed in sections.items():
        current = config.section(section)
        if any(getattr(current, field) != value for field, value in changed.items()):
            update[section] = current.model_copy(update=changed)
    return update


def local_settings(config: TrainConfig) -> list[str]:
    """The settings naming a local file this objective's job reads (the config alone is read).

    A job elsewhere needs these shipped; settings that are URLs it reads itself.
    """
    chosen = objective(config.objective)
    named: list[tuple[str, str | None]] = [("dataset", config.dataset)]
    if chosen.reads_eval:
        named.append(("eval_dataset", config.eval_dataset))
    named += [(entry.setting, entry.path) for entry in chosen.file_settings(config)]
    return [key for key, value in named if value and not is_url(value)]
