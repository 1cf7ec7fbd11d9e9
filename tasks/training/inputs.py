"""Which files a training job reads, per objective, and the settings that tell a job elsewhere where their copies are.

A job on another machine (a Docker container, a Prefect work pool) sees none of this
machine's folders: every file it reads is shipped (uploaded to shared storage, or
mounted read-only) and the settings naming those files are rewritten to name the
copies. Which files those are is each objective's own ``data_files``, the function its
``load_data`` calls, so what is shipped is what the job reads:

    objective  train (-> train.jsonl)              eval (-> eval.jsonl)   also
    dpo        dpo/train.jsonl or train.jsonl      eval.jsonl beside it   -
    sft        sft/train.jsonl                     sft/eval.jsonl         sft.rehearsal_file (-> rehearsal.jsonl)
    kto        kto/train.jsonl                     kto/eval.jsonl         -
    grpo       sft/train.jsonl, or a tasks file    none                   scenario files of grpo.scenarios
                                                                          (-> scenarios/<i>-<name>)

``eval_dataset`` replaces the eval file beside the training file (GRPO reads none); a
``.jsonl`` given as ``dataset`` is the training file itself.
"""

from __future__ import annotations

import posixpath
from collections.abc import Callable
from dataclasses import dataclass

from agir_retrain.tasks.errors import ConfigError
from agir_retrain.tasks.io import is_url
from agir_retrain.tasks.settings.models import TrainConfig
from agir_retrain.tasks.training.data import SettingFile
from agir_retrain.tasks.training.grpo import SCENARIOS_KEY
from agir_retrain.tasks.training.sft import REHEARSAL_KEY

TRAIN_NAME = "train.jsonl"
EVAL_NAME = "eval.jsonl"
REHEARSAL_NAME = "rehearsal.jsonl"
SCENARIO_FOLDER = "scenarios"


@dataclass(frozen=True, slots=True, kw_only=True)
class JobFile:
    """One file a job reads: the setting naming it, where it is, and its name once shipped.

    ``name`` is relative (``train.jsonl``, ``scenarios/0-small.json``): shipped copies
    go to ``<shared>/dataset/<name>`` or are mounted at ``/data/<name>``. ``index`` is
    the entry's position when the setting is a list (``grpo.scenarios``).
    """

    key: str
    path: str
    name: str
    index: int | None = None


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
        DatasetError: no training file, eval file or rehearsal file where the config says.
        ConfigError: a ``grpo.scenarios`` entry that is neither a built-in profile nor a file.
    """
    from agir_retrain.tasks.training.program import objective_module

    files = objective_module(config.objective).data_files(config)
    return JobInputs(
        objective=config.objective,
        train=JobFile(key="dataset", path=files.train, name=TRAIN_NAME),
        eval=(
            JobFile(key="eval_dataset", path=files.eval, name=EVAL_NAME)
            if files.eval is not None
            else None
        ),
        extra=tuple(_extra(entry) for entry in files.extra),
    )


def _extra(entry: SettingFile) -> JobFile:
    if entry.key == REHEARSAL_KEY:
        name = REHEARSAL_NAME
    else:
        base = posixpath.basename(entry.path.rstrip("/")) or "scenario.json"
        prefix = f"{entry.index}-" if entry.index is not None else ""
        name = f"{SCENARIO_FOLDER}/{prefix}{base}"
    return JobFile(key=entry.key, path=entry.path, name=name, index=entry.index)


def relocated(
    config: TrainConfig, inputs: JobInputs, where: Callable[[JobFile], str]
) -> dict[str, object]:
    """The settings update that points a job at its shipped copies (``where(file)`` of each).

    Only the settings that change are in it: ``dataset``, ``eval_dataset`` (None when the
    objective reads no eval file but one was given), and the ``sft`` or ``grpo`` section
    with its file entries replaced, ready for ``config.model_copy(update=...)``.

    Raises:
        ConfigError: a scenario file named inside a GRPO tasks file: no setting names it,
            so a job elsewhere could not be pointed at a copy.
    """
    update: dict[str, object] = {"dataset": where(inputs.train)}
    if inputs.eval is not None:
        update["eval_dataset"] = where(inputs.eval)
    elif config.eval_dataset is not None:
        update["eval_dataset"] = None  # not read (GRPO): a path here would mean nothing there
    scenarios = list(config.grpo.scenarios)
    for entry in inputs.extra:
        if entry.key == REHEARSAL_KEY:
            update["sft"] = config.sft.model_copy(update={"rehearsal_file": where(entry)})
        elif entry.key == SCENARIOS_KEY and entry.index is not None:
            scenarios[entry.index] = where(entry)
        else:
            raise ConfigError(
                f"{inputs.train.path}: the tasks file names the scenario file {entry.path!r}, "
                "which a job on another machine cannot see; name built-in profiles in the tasks "
                "file, or train GRPO on sft/train.jsonl with the file in grpo.scenarios"
            )
    if scenarios != list(config.grpo.scenarios):
        update["grpo"] = config.grpo.model_copy(update={"scenarios": scenarios})
    return update


def local_settings(config: TrainConfig) -> list[str]:
    """The settings naming a local file this objective's job reads (the config alone is read).

    A job elsewhere needs these shipped; settings that are URLs it reads itself.
    """
    from agir_retrain.tasks.environment.profiles import PROFILES

    named: list[tuple[str, str | None]] = [("dataset", config.dataset)]
    if config.objective != "grpo":  # GRPO reads no eval file
        named.append(("eval_dataset", config.eval_dataset))
    if config.objective == "sft":
        named.append((REHEARSAL_KEY, config.sft.rehearsal_file))
    if config.objective == "grpo":
        named += [
            (f"{SCENARIOS_KEY}[{i}]", name)
            for i, name in enumerate(config.grpo.scenarios)
            if name not in PROFILES
        ]
    return [key for key, value in named if value and not is_url(value)]
