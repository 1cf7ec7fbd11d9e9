"""The tiny model's folder is readable by another user, as a docker job's user must read it."""

from __future__ import annotations

import stat

from agir_retrain.tasks.synth.tiny_model import make_tiny_model


def test_every_file_is_readable_by_group_and_others(tmp_path):
    folder = make_tiny_model(tmp_path / "m", hidden_size=32, layers=1)
    modes = {path.name: stat.S_IMODE(path.stat().st_mode) for path in folder.iterdir()}
    assert "model.safetensors" in modes
    unreadable = {name: oct(mode) for name, mode in modes.items() if mode & 0o044 != 0o044}
    assert unreadable == {}
