"""Lineage files: who collected a dataset's runs (``generation.json``), what an adapter learnt from.

A dataset built from runs that adapter N collected records it in ``generation.json``
(``agir-retrain dataset ... --set produced_by=ADAPTER``): the adapter's weights digest,
its recorded evaluation (``ADAPTER/eval/eval.json``, as the retrain flow leaves it) and
its own ``lineage.json``, so a chain of generations can be followed back to the base.
Both files are small JSON documents validated against ``settings/generations.py``.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import TypeVar

from pydantic import BaseModel, ValidationError

from agir_retrain.tasks.errors import ConfigError, DatasetError
from agir_retrain.tasks.filenames import (
    ADAPTER_FILE,
    EVAL_JSON,
    GENERATION_FILE,
    LINEAGE_FILE,
)
from agir_retrain.tasks.io import join, sha256_file, write_bytes_atomic
from agir_retrain.tasks.objectives import ORIGINAL, dataset_splits, objective
from agir_retrain.tasks.settings.generations import Lineage, Producer, RecordedEvaluation

MAX_LINEAGE_BYTES = 16 << 20  # lineage lists generations; megabytes of it is not lineage
RecordT = TypeVar("RecordT", bound=BaseModel)


def training_file_names() -> tuple[str, ...]:
    """Every file of a built dataset some registered objective reads (its splits), in order."""
    names: list[str] = []
    for split in dataset_splits():
        names += [name for name in (split.train, split.eval) if name and name not in names]
    return tuple(names)


def eval_files() -> dict[str, str]:
    """Each eval file of the registered objectives' splits, and the training file beside it."""
    return {split.eval: split.train for split in dataset_splits() if split.eval}


def training_files(dataset: Path) -> dict[str, Path]:
    """The training files a dataset folder holds, by their name in the dataset layout.

    The flat layout of older datasets (``train.jsonl``, ``eval.jsonl`` at the top) is read
    as the original objective's split.
    """
    found = {name: dataset / name for name in training_file_names() if (dataset / name).is_file()}
    original = objective(ORIGINAL).splits[0]
    for flat, name in (("train.jsonl", original.train), ("eval.jsonl", original.eval)):
        if name and name not in found and (dataset / flat).is_file():
            found[name] = dataset / flat
    return found


def files_sha256(files: dict[str, Path]) -> str:
    """sha256 over (name, content sha256) of each file, in name order."""
    import hashlib

    digest = hashlib.sha256()
    for name in sorted(files):
        digest.update(f"{name}\0{sha256_file(str(files[name]))}\n".encode())
    return digest.hexdigest()


def _read_json(path: Path) -> object:
    if path.stat().st_size > MAX_LINEAGE_BYTES:
        raise DatasetError(f"{path}: over {MAX_LINEAGE_BYTES} bytes; not a lineage file")
    try:
        return json.loads(path.read_bytes())
    except (ValueError, UnicodeDecodeError) as error:
        raise DatasetError(f"{path}: not JSON ({error})") from error


def _first_error(path: Path, error: ValidationError) -> str:
    first = error.errors()[0]
    where = ".".join(str(part) for part in first["loc"]) or "(top level)"
    return f"{path}: {where}: {first['msg']}"


def _read_record(path: Path, model: type[RecordT]) -> RecordT | None:
    """A lineage record from a JSON file, or None when there is no file.

    Raises:
        DatasetError: the file is there but malformed (one line naming the field).
    """
    if not path.is_file():
        return None
    try:
        return model.model_validate(_read_json(path))
    except ValidationError as error:
        raise DatasetError(_first_error(path, error)) from None


def read_producer(dataset: Path) -> Producer | None:
    """A dataset's ``generation.json``, or None when it has none (``DatasetError`` if malformed)."""
    return _read_record(dataset / GENERATION_FILE, Producer)


def read_lineage(adapter: Path) -> Lineage | None:
    """An adapter folder's ``lineage.json``, or None when it was trained on one dataset."""
    return _read_record(adapter / LINEAGE_FILE, Lineage)


def lineage_bytes(lineage: Lineage) -> bytes:
    """``lineage.json``'s bytes: indented, keys in field order, so the same window gives the same bytes."""
    return (lineage.model_dump_json(indent=2) + "\n").encode()


def read_evaluation(location: str) -> RecordedEvaluation:
    """One model's figures from an ``eval.json``: ``PATH`` (its only non-base model) or ``PATH#MODEL``.

    Raises:
        ConfigError: no such file, or no such model in it (one line).
    """
    path_text, _, model = location.partition("#")
    path = Path(path_text)
    if not path.is_file():
        raise ConfigError(f"{path}: no eval.json there (write one with `agir-retrain evaluate`)")
    report = _read_json(path)
    models = report.get("models") if isinstance(report, dict) else None
    if not isinstance(models, dict) or not models:
        raise ConfigError(f"{path}: no `models` in it; is this an eval.json?")
    if not model:
        candidates = sorted(name for name in models if name != "base") or sorted(models)
        if len(candidates) != 1:
            raise ConfigError(f"{path}: models {sorted(models)}: name one as {path}#MODEL")
        model = candidates[0]
    entry = models.get(model)
    if not isinstance(entry, dict):
        raise ConfigError(f"{path}: no model {model!r} in it (it has {sorted(models)})")
    try:
        return RecordedEvaluation(
            source=str(path.resolve()),
            model=model,
            pass_at_1=entry["pass_at_1"]["value"],
            mean_freed_share=entry["mean_freed_share"]["value"],
            tasks=entry["tasks"],
        )
    except (KeyError, TypeError, ValidationError) as error:
        raise ConfigError(f"{path}: model {model!r} lacks a figure ({error!r})") from None


def producer_of(adapter: str | None, evaluation: str | None = None) -> Producer:
    """The ``generation.json`` record of a dataset whose runs ``adapter`` (None: the base) collected.

    ``evaluation`` is an ``eval.json`` (``PATH`` or ``PATH#MODEL``); without one, the
    adapter's own ``eval/eval.json`` is used when the retrain flow left one.

    Raises:
        ConfigError: the adapter folder holds no adapter, or the evaluation cannot be read.
    """
    digest = lineage = None
    if adapter is not None:
        folder = Path(adapter)
        if not (folder / ADAPTER_FILE).is_file():
            raise ConfigError(f"produced_by={adapter!r}: no {ADAPTER_FILE} there")
        digest = sha256_file(str(folder / ADAPTER_FILE))
        adapter = str(folder.resolve())  # recorded absolute: read later from anywhere
        lineage = read_lineage(folder)
        if evaluation is None and (folder / "eval" / EVAL_JSON).is_file():
            evaluation = f"{folder / 'eval' / EVAL_JSON}#adapter"
    return Producer(
        adapter=adapter,
        adapter_sha256=digest,
        evaluation=read_evaluation(evaluation) if evaluation else None,
        lineage=lineage,
    )


def write_producer(dataset: str, producer: Producer) -> None:
    """Write ``generation.json`` into a dataset folder (or URL), atomically."""
    write_bytes_atomic(
        join(dataset, GENERATION_FILE), (producer.model_dump_json(indent=2) + "\n").encode()
    )
