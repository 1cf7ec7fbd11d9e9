"""Train on a window of generations: pick the datasets, combine their files, record the lineage.

    agir-retrain train gen1/dataset gen2/dataset gen3/dataset --window best:2

``prepare_window`` runs where the job is submitted, before any backend sees the config:
it reads each dataset (oldest first) and its ``generation.json``, takes the window
(``all``, ``last:K``, ``best:K`` by the producing model's recorded evaluation), and
writes the chosen datasets' training files, combined, into one content-addressed folder
under the cache (``$AGIR_CACHE_DIR/windows/<digest>``). The config it returns names that
folder and carries the ``Lineage``, so every backend trains a fresh adapter on the base
from one ordinary dataset folder and writes the lineage beside the adapter.

Combining keeps rows in generation order and each row's bytes as they were, so a window
of one dataset trains on exactly its rows. A row already taken from an earlier
generation (same content apart from ``source``, the file it was read from) is not taken
again; an eval row whose run is among the training rows is dropped, so no
run is both learnt and judged. Both are counted.
"""

from __future__ import annotations

import hashlib
import os
import shutil
import tempfile
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path

import orjson

from agir_retrain.tasks.errors import ConfigError, DatasetError
from agir_retrain.tasks.filenames import LINEAGE_FILE
from agir_retrain.tasks.io import default_cache_dir, is_url, local_path
from agir_retrain.tasks.lineage import (
    eval_files,
    files_sha256,
    lineage_bytes,
    read_producer,
    training_file_names,
    training_files,
)
from agir_retrain.tasks.settings.generations import GenerationRecord, Lineage, Producer, RankBy
from agir_retrain.tasks.settings.train import TrainConfig

WINDOW_VERSION = "2"  # bump when combining changes: an older window folder is rebuilt


@dataclass(frozen=True, slots=True, kw_only=True)
class Generation:
    """One dataset given for a window: its files, their digest, and who collected its runs."""

    number: int  # 1 for the oldest
    dataset: str
    files: dict[str, Path]
    sha256: str
    producer: Producer | None


@dataclass(slots=True, kw_only=True)
class CombineCounts:
    """What combining did: rows taken per generation and file, and rows dropped."""

    rows: dict[int, dict[str, int]] = field(default_factory=dict)
    duplicates: int = 0
    eval_in_train: int = 0


def read_generations(datasets: Sequence[str]) -> list[Generation]:
    """Read each dataset folder (oldest first): its training files and ``generation.json``.

    Raises:
        ConfigError: a dataset is a URL (windows are combined from local folders).
        DatasetError: a folder is missing or holds no training file.
    """
    generations = []
    for number, dataset in enumerate(datasets, start=1):
        if is_url(dataset) and not dataset.startswith("file://"):
            raise ConfigError(
                f"generations.datasets: {dataset!r} is a URL; a window is combined from local "
                "folders (download it first)"
            )
        folder = Path(local_path(dataset))
        if not folder.is_dir():
            raise DatasetError(f"generations.datasets: {dataset}: no such dataset folder")
        files = training_files(folder)
        if not files:
            raise DatasetError(
                f"generations.datasets: {dataset}: no training file "
                f"({', '.join(training_file_names())})"
            )
        generations.append(
            Generation(
                number=number,
                dataset=str(folder.resolve()),  # recorded absolute: read later from anywhere
                files=files,
                sha256=files_sha256(files),
                producer=read_producer(folder),
            )
        )
    return generations


def select_window(
    generations: Sequence[Generation], window: str, rank_by: RankBy
) -> list[Generation]:
    """The generations a window takes, in generation order.

    Raises:
        ConfigError: ``best:K`` and a generation has no recorded evaluation.
    """
    kind, _, count = window.partition(":")
    if kind == "all":
        return list(generations)
    if kind == "last":
        return list(generations[-int(count) :])
    unrecorded = [
        g.dataset for g in generations if g.producer is None or g.producer.evaluation is None
    ]
    if unrecorded:
        raise ConfigError(
            f"window={window} ranks by the recorded evaluation, and {unrecorded[0]} has none: "
            "build its dataset with produced_by (and an evaluated adapter) or use last:K"
        )

    def score(generation: Generation) -> tuple[float, int]:
        evaluation = generation.producer.evaluation  # type: ignore[union-attr]  # checked above
        return getattr(evaluation, rank_by), generation.number  # ties: the newer wins

    best = sorted(generations, key=score, reverse=True)[: int(count)]
    return sorted(best, key=lambda g: g.number)


def _row_identity(line: bytes, where: str) -> tuple[bytes, bytes]:
    """A row's content key (ignoring ``source``) and its run key (``run_id``, else the content)."""
    try:
        row = orjson.loads(line)
    except orjson.JSONDecodeError as error:
        raise DatasetError(f"{where}: not JSON ({error})") from None
    if isinstance(row, dict):
        row.pop("source", None)
    content = hashlib.blake2b(orjson.dumps(row, option=orjson.OPT_SORT_KEYS), digest_size=16)
    run_id = row.get("run_id") if isinstance(row, dict) else None
    return content.digest(), (run_id.encode() if isinstance(run_id, str) else content.digest())


def combine(selected: Sequence[Generation], target: Path) -> CombineCounts:
    """Write the selected generations' training files, combined, into ``target`` (see the module)."""
    counts = CombineCounts(rows={g.number: {} for g in selected})
    runs_in: dict[str, set[bytes]] = {}
    eval_of = eval_files()  # each eval file and the training file whose runs it must not share
    # Training files first: an eval file is checked against its training file's runs.
    for name in sorted(training_file_names(), key=lambda n: n in eval_of):
        sources = [(g, g.files[name]) for g in selected if name in g.files]
        if not sources:
            continue
        earlier: set[bytes] = set()  # rows of earlier generations' copies of this file
        runs: set[bytes] = runs_in.setdefault(name, set())
        train_runs = runs_in.get(eval_of.get(name, ""), set())
        (target / name).parent.mkdir(parents=True, exist_ok=True)
        with (target / name).open("wb") as sink:
            for generation, path in sources:
                taken, this_generation = 0, set()
                with path.open("rb") as rows:
                    for number, line in enumerate(rows, start=1):
                        if not line.strip():
                            continue
                        content, run = _row_identity(line, f"{path}:{number}")
                        if content in earlier:  # repeats within one dataset are its own choice
                            counts.duplicates += 1
                            continue
                        if run in train_runs:
                            counts.eval_in_train += 1
                            continue
                        this_generation.add(content)
                        runs.add(run)
                        sink.write(line if line.endswith(b"\n") else line + b"\n")
                        taken += 1
                earlier |= this_generation
                counts.rows[generation.number][name] = taken
    return counts


def window_folder(selected: Sequence[Generation], window: str, rank_by: str) -> Path:
    """The cache folder of a window: named by what goes into it, so a rerun reuses it."""
    key = hashlib.sha256(
        "\n".join(
            [WINDOW_VERSION, window, rank_by, *(f"{g.number}:{g.sha256}" for g in selected)]
        ).encode()
    ).hexdigest()[:20]
    return default_cache_dir() / "windows" / key


def prepare_window(config: TrainConfig) -> TrainConfig:
    """The config to submit: the window's combined dataset and its lineage (unchanged without one)."""
    settings = config.generations
    if not settings.datasets or config.lineage is not None:
        return config
    generations = read_generations(settings.datasets)
    selected = select_window(generations, settings.window, settings.rank_by)
    folder = window_folder(selected, settings.window, settings.rank_by)
    if not (folder / LINEAGE_FILE).is_file():  # written last: its presence means complete
        folder.parent.mkdir(parents=True, exist_ok=True)
        staging = Path(tempfile.mkdtemp(prefix=f".{folder.name}.", dir=folder.parent))
        try:
            counts = combine(selected, staging)
            lineage = _lineage(generations, selected, counts, settings.window, settings.rank_by)
            lineage = lineage.model_copy(update={"dataset": str(folder)})
            (staging / LINEAGE_FILE).write_bytes(lineage_bytes(lineage))
            shutil.rmtree(folder, ignore_errors=True)  # an interrupted earlier attempt
            os.replace(staging, folder)
        except BaseException:
            shutil.rmtree(staging, ignore_errors=True)
            raise
    lineage = Lineage.model_validate_json((folder / LINEAGE_FILE).read_bytes())
    return config.model_copy(update={"dataset": str(folder), "lineage": lineage})


def _lineage(
    generations: Sequence[Generation],
    selected: Sequence[Generation],
    counts: CombineCounts,
    window: str,
    rank_by: RankBy,
) -> Lineage:
    taken = {g.number for g in selected}
    return Lineage(
        window=window,
        rank_by=rank_by,
        dataset="",
        generations=[
            GenerationRecord(
                generation=g.number,
                dataset=g.dataset,
                dataset_sha256=g.sha256,
                producer=g.producer,
                selected=g.number in taken,
                rows=counts.rows.get(g.number, {}),
            )
            for g in generations
        ],
        duplicate_rows_dropped=counts.duplicates,
        eval_rows_in_train_dropped=counts.eval_in_train,
    )
