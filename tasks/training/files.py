"""Find a split's files: the training file of a built dataset (or one JSONL file) and its eval file."""

from __future__ import annotations

import posixpath

from agir_retrain.tasks.errors import DatasetError
from agir_retrain.tasks.io import exists, join
from agir_retrain.tasks.objectives import DataFiles, Split

TRAIN_NAME = "train.jsonl"
EVAL_NAME = "eval.jsonl"


def locate_split(
    dataset: str,
    split: Split,
    eval_dataset: str | None = None,
    *,
    flat: bool = False,
    reads_eval: bool = True,
) -> DataFiles:
    """The training file and its eval file for ``split`` of a dataset, or of one ``.jsonl`` file.

    ``dataset`` is a dataset folder (``<split.train>``; with ``flat``, the older layout's
    ``train.jsonl`` too) or a ``.jsonl`` file, which is the training file itself. The eval
    file is ``eval_dataset`` when given, else ``eval.jsonl`` beside the training file if it
    exists; none when ``reads_eval`` is off.

    Raises:
        DatasetError: no training file where the settings say, or no given eval file.
    """
    if dataset.endswith(".jsonl"):
        train = dataset
    else:
        candidates = (split.train, TRAIN_NAME) if flat else (split.train,)
        found = [join(dataset, name) for name in candidates if exists(join(dataset, name))]
        if not found and flat:
            raise DatasetError(
                f"{dataset}: no training file; expected a .jsonl file or a folder holding "
                f"{' or '.join(candidates)}"
            )
        train = found[0] if found else join(dataset, split.train)
    if not exists(train):
        folder = posixpath.dirname(split.train)
        raise DatasetError(
            f"{train}: no such file; give the dataset flow's folder (it writes "
            f"{folder}/{TRAIN_NAME}) or a .jsonl file"
        )
    if not reads_eval:
        return DataFiles(train=train, eval=None)
    if eval_dataset is not None:
        if not exists(eval_dataset):
            raise DatasetError(f"{eval_dataset}: no such eval file")
        return DataFiles(train=train, eval=eval_dataset)
    sibling = train[: -len(TRAIN_NAME)] + EVAL_NAME if train.endswith(TRAIN_NAME) else None
    return DataFiles(train=train, eval=sibling if sibling and exists(sibling) else None)
