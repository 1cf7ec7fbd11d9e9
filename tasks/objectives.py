"""Training objectives: what one is (``Objective``), and the one registry that names them.

An objective is one module (``tasks/training/dpo.py``, ``sft.py``, ``kto.py``, ``grpo.py``,
or a module of your own) holding everything it does its own way: its settings section
(``TrainConfig.<name>``), the dataset files it reads and how, the pure mapping from the
settings to its TRL config, its trainer, its curves and headline metrics, the files a job on
another machine must be shipped, and the splits a window of generations combines for it.
Nothing else in the project names an objective: the training program, the settings, the
command line, submission, archives and lineage all ask this registry. (The built dataset's
folders keep the names datasets have always had, ``dpo/``, ``sft/``, ``kto/``: that is the
dataset's format, in ``filenames.py``, which objectives read by kind.)

    from agir_retrain.tasks.objectives import register
    from agir_retrain.tasks.training.objective import TrlObjective
    register(MyObjective())          # in-process; or, for jobs in other processes too:
    agir-retrain train dataset --objective mine --set 'objective_plugins=[my_pkg.mine:OBJECTIVE]'

The built-in objectives are named below by import path and loaded on first use, as plugins
are: the registry sits with the settings (a foundation, which validate each objective's
section), the objectives with the training stage, whose modules it imports only when first
asked.
"""

from __future__ import annotations

import importlib
import re
import threading
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any, Protocol

from agir_retrain.tasks.errors import ConfigError

if TYPE_CHECKING:
    from pydantic import BaseModel

    from agir_retrain.tasks.settings.train import TrainConfig

# The objectives that ship with agir-retrain, in the order help texts and `compare` list them.
BUILTIN: dict[str, str] = {
    "dpo": "agir_retrain.tasks.training.dpo:OBJECTIVE",
    "sft": "agir_retrain.tasks.training.sft:OBJECTIVE",
    "kto": "agir_retrain.tasks.training.kto:OBJECTIVE",
    "grpo": "agir_retrain.tasks.training.grpo:OBJECTIVE",
}
# The default objective, and the one of everything made before there were others (a
# metrics.json without an objective, the flat dataset layout with train.jsonl at its top).
ORIGINAL = "dpo"
_NAME = re.compile(r"^[a-z][a-z0-9_]*$")


@dataclass(frozen=True, slots=True, kw_only=True)
class SettingFile:
    """A file a job reads besides its split, and the setting that names it.

    ``key`` is the dotted setting (``sft.rehearsal_file``, ``grpo.scenarios``), or None when
    no setting names the file (a scenario named inside a tasks file): a job elsewhere cannot
    be pointed at a copy of such a file, and ``fix`` says why and what to do instead. ``index`` is
    the entry's position when the setting is a list. ``name`` is the file's name once
    shipped to a job elsewhere (relative: ``rehearsal.jsonl``, ``scenarios/0-small.json``).
    """

    key: str | None
    path: str
    name: str
    index: int | None = None
    fix: str = ""

    @property
    def setting(self) -> str:
        """The setting as a person writes it: ``grpo.scenarios[1]``."""
        where = self.key or "(no setting)"
        return f"{where}[{self.index}]" if self.index is not None else where


@dataclass(frozen=True, slots=True, kw_only=True)
class DataFiles:
    """The training file, the eval file if any, and the other files the objective reads."""

    train: str
    eval: str | None
    extra: tuple[SettingFile, ...] = ()


@dataclass(frozen=True, slots=True, kw_only=True)
class TrainingData:
    """The checked training and eval rows, and the files they came from."""

    files: DataFiles
    train: list[dict[str, Any]]
    eval: list[dict[str, Any]]


@dataclass(frozen=True, slots=True, kw_only=True)
class Split:
    """Files of a built dataset an objective reads: a training file and the eval file beside it.

    A window of generations combines every registered objective's splits; an eval row whose
    run is among its training file's rows is dropped there.
    """

    train: str  # relative to the dataset folder, e.g. dpo/train.jsonl
    eval: str | None = None


@dataclass(frozen=True, slots=True, kw_only=True)
class Curve:
    """One plot of the log history: the training and evaluation series of one metric."""

    file: str  # e.g. loss.png
    train_key: str
    eval_key: str
    title: str


@dataclass(frozen=True, slots=True, kw_only=True)
class Headline:
    """An evaluation figure a reader looks at first: (metric key, label, format spec)."""

    key: str
    label: str
    spec: str


class Objective(Protocol):
    """What an objective provides. ``tasks/training/objective.py`` implements the shared part."""

    name: str  # lowercase; also the key of its settings section
    summary: str  # what it learns from, for help texts
    settings: type[BaseModel]  # its section of TrainConfig (frozen, unknown keys rejected)
    splits: tuple[Split, ...]  # the built dataset's files it reads
    reads_eval: bool  # whether it evaluates on an eval file (its own, or eval_dataset)
    curves: tuple[Curve, ...]
    headlines: tuple[Headline, ...]

    def data_files(self, config: TrainConfig) -> DataFiles:
        """The files a job with these settings reads (checked to exist)."""
        ...

    def file_settings(self, config: TrainConfig) -> tuple[SettingFile, ...]:
        """The settings of its section naming files it reads (pure: nothing is opened)."""
        ...

    def load_data(self, config: TrainConfig) -> TrainingData:
        """Read and check every training and eval row (before any model loads)."""
        ...

    def max_length(self, config: TrainConfig) -> int:
        """Tokens each row is fitted to."""
        ...

    def reference(self, config: TrainConfig) -> str:
        """What the policy is compared with (``adapter``, ``separate``, ``precomputed``, ``none``)."""
        ...

    def trl_config(
        self,
        config: TrainConfig,
        *,
        on_gpu: bool,
        bf16: bool,
        gradient_checkpointing: bool,
        train_rows: Sequence[dict[str, Any]] = (),
        has_eval: bool = False,
    ) -> dict[str, Any]:
        """The keyword arguments of its TRL config (pure: no torch, no TRL)."""
        ...

    def build_trainer(self, config: TrainConfig, **parts: Any) -> Any:
        """Its TRL trainer over the policy and the fitted rows."""
        ...

    def to_dataset(self, rows: Sequence[dict[str, Any]]) -> Any:
        """A ``datasets.Dataset`` of the columns its trainer reads."""
        ...

    def check_backend(self, config: TrainConfig, backend: str) -> None:
        """Raise ``ConfigError`` if a job with these settings cannot run on ``backend``."""
        ...

    def nested_sandbox(self, config: TrainConfig) -> bool:
        """Whether its job runs sandboxed programs itself (a container must allow bwrap)."""
        ...


# What ``register`` checks an objective has (the Protocol's attributes and methods).
MEMBERS = (
    "name", "summary", "settings", "splits", "reads_eval", "curves", "headlines", "data_files",
    "file_settings", "load_data", "max_length", "reference", "trl_config", "build_trainer",
    "to_dataset", "check_backend", "nested_sandbox",
)  # fmt: skip
_lock = threading.RLock()
_registered: dict[str, Objective] = {}
_builtins_loaded = False


def _load_builtins() -> None:
    global _builtins_loaded
    with _lock:
        if _builtins_loaded:
            return
        _builtins_loaded = True
        loaded = {name: _import(path) for name, path in BUILTIN.items()}
        # Built-ins first, in their order; anything registered before they loaded follows.
        plugins = dict(_registered)
        _registered.clear()
        _registered.update(loaded)
        _registered.update(plugins)


def _import(path: str) -> Objective:
    module_name, _, attribute = path.partition(":")
    try:
        module = importlib.import_module(module_name)
        found = getattr(module, attribute or "OBJECTIVE")
    except (ImportError, AttributeError) as error:
        raise ConfigError(f"objective plugin {path!r}: cannot import it ({error})") from error
    return found


def objectives() -> dict[str, Objective]:
    """Every registered objective by name: the built-ins, then those registered since."""
    _load_builtins()
    with _lock:
        return dict(_registered)


def names() -> tuple[str, ...]:
    """The registered objectives' names."""
    return tuple(objectives())


def objective(name: str) -> Objective:
    """The objective registered as ``name``.

    Raises:
        ConfigError: no such objective (the message lists those there are).
    """
    found = objectives().get(name)
    if found is None:
        raise ConfigError(f"objective={name!r}: choose one of {', '.join(names())}")
    return found


def register(candidate: Objective) -> Objective:
    """Add an objective; registering the same object again is a no-op.

    Raises:
        ConfigError: the name is not a lowercase identifier, is a top-level training
            setting, or is taken by another objective.
    """
    from agir_retrain.tasks.settings.train import TrainConfig  # here: it imports this module

    name = getattr(candidate, "name", None)
    if not isinstance(name, str) or not _NAME.match(name):
        raise ConfigError(f"objective name {name!r}: use lowercase letters, digits and _")
    if name in TrainConfig.model_fields:
        raise ConfigError(f"objective name {name!r} is a training setting; choose another")
    missing = [member for member in MEMBERS if not hasattr(candidate, member)]
    if missing:
        raise ConfigError(f"objective {name!r} lacks {', '.join(missing)}")
    _load_builtins()
    with _lock:
        present = _registered.get(name)
        if present is not None and present is not candidate:
            raise ConfigError(f"objective {name!r} is registered already ({present!r})")
        _registered[name] = candidate
    return candidate


def unregister(name: str) -> None:
    """Remove an objective registered with ``register`` (built-ins stay)."""
    if name in BUILTIN:
        raise ConfigError(f"objective {name!r} is built in; it cannot be unregistered")
    with _lock:
        _registered.pop(name, None)


@contextmanager
def registered(candidate: Objective) -> Iterator[Objective]:
    """Register an objective for the duration of a block (a test's, say)."""
    present = candidate.name in objectives()
    register(candidate)
    try:
        yield candidate
    finally:
        if not present:
            unregister(candidate.name)


def load_plugins(paths: Sequence[str]) -> None:
    """Import and register objectives named ``module:attribute`` (``attribute``: OBJECTIVE)."""
    for path in paths:
        register(_import(path))


def dataset_splits() -> tuple[Split, ...]:
    """Every registered objective's splits, each file once, in registration order."""
    seen: dict[str, Split] = {}
    for candidate in objectives().values():
        for split in candidate.splits:
            known = seen.get(split.train)
            if known is None or (known.eval is None and split.eval is not None):
                seen[split.train] = split
    return tuple(seen.values())
