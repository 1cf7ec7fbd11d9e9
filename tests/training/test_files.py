"""Finding a split's files: a dataset folder's split (or the older flat layout), or one file."""

from __future__ import annotations

import json

import pytest

from agir_retrain.tasks.errors import DatasetError
from agir_retrain.tasks.training.dpo import OBJECTIVE as PREFERENCE
from agir_retrain.tasks.training.files import locate_split


def locate(dataset, eval_dataset=None):
    """The preference split's files, as the original objective finds them (flat layout too)."""
    return locate_split(dataset, PREFERENCE.splits[0], eval_dataset, flat=True)


def _write(path, rows):
    path.write_text("".join(json.dumps(r) + "\n" for r in rows))
    return str(path)


CONVERSATIONAL = {
    "prompt": [{"role": "user", "content": "free some space"}],
    "chosen": [{"role": "assistant", "content": "rm -rf /tmp/cache"}],
    "rejected": [{"role": "assistant", "content": "sudo reboot"}],
}
STANDARD = {"prompt": "free some space", "chosen": "rm -rf /tmp/cache", "rejected": "sudo reboot"}


class TestLocate:
    def test_folder_layouts(self, tmp_path):
        (tmp_path / "dpo").mkdir()
        _write(tmp_path / "dpo" / "train.jsonl", [CONVERSATIONAL])
        _write(tmp_path / "dpo" / "eval.jsonl", [CONVERSATIONAL])
        files = locate(str(tmp_path))
        assert (files.train, files.eval) == (
            str(tmp_path / "dpo" / "train.jsonl"),
            str(tmp_path / "dpo" / "eval.jsonl"),
        )

    def test_single_file_and_explicit_eval(self, tmp_path):
        train = _write(tmp_path / "mine.jsonl", [STANDARD])
        other = _write(tmp_path / "held_out.jsonl", [STANDARD])
        assert locate(train).eval is None
        assert locate(train, other).eval == other

    def test_nothing_there(self, tmp_path):
        with pytest.raises(DatasetError, match="no training file"):
            locate(str(tmp_path))
