"""Archives: a manifest of every file, deterministic bytes, and verification that catches tampering."""

from __future__ import annotations

import io
import json
import tarfile
from pathlib import Path

import fsspec
import pytest
from typer.testing import CliRunner

from agir_retrain.flows.cli import app
from agir_retrain.tasks.delivery.archive import (
    MANIFEST,
    create_archive,
    dataset_hash,
    read_archive,
    verify_archive,
)
from agir_retrain.tasks.errors import AgirError


@pytest.fixture
def training_out(tmp_path) -> Path:
    """A training output folder as the program leaves it (contents stand in for real files)."""
    out = tmp_path / "adapter"
    (out / "checkpoint-2").mkdir(parents=True)
    (out / "checkpoint-2" / "optimizer.pt").write_bytes(b"big")
    for name, data in {
        "adapter_model.safetensors": b"\x00weights",
        "adapter_config.json": b"{}",
        "tokenizer.json": b"{}",
        "metrics.json": json.dumps(
            {"base_model": "org/base", "train": {"global_step": 2}}
        ).encode(),
        "loss.png": b"\x89PNG",
        "train_config.yaml": b"dataset: d\n",
        "README.md": b"# card\n",
    }.items():
        (out / name).write_bytes(data)
    return out


@pytest.fixture
def dataset(tmp_path) -> Path:
    folder = tmp_path / "dataset"
    (folder / "dpo").mkdir(parents=True)
    (folder / "dpo" / "train.jsonl").write_text('{"a": 1}\n')
    (folder / "dpo" / "eval.jsonl").write_text('{"a": 2}\n')
    (folder / "report.json").write_text('{"runs_in": 3}')
    return folder


def test_manifest_lists_every_file_with_hash_and_size(training_out, dataset, tmp_path):
    location = create_archive(training_out, str(tmp_path / "archives"), dataset=dataset)
    assert Path(location).name == f"agir-adapter-{dataset_hash(dataset)[:12]}.tar.gz"
    files = read_archive(location)
    manifest = json.loads(files[MANIFEST])
    assert set(manifest["files"]) == set(files) - {MANIFEST}
    assert "dataset/report.json" in files
    assert not any(name.startswith("checkpoint-") for name in files)
    assert manifest["base_model"] == "org/base"
    assert manifest["dataset_sha256"] == dataset_hash(dataset)
    assert manifest["packages"]["trl"]
    assert manifest["files"]["adapter_model.safetensors"]["size"] == len(b"\x00weights")
    assert verify_archive(location).ok


def test_same_outputs_same_bytes_apart_from_the_creation_time(training_out, dataset, tmp_path):
    a = read_archive(create_archive(training_out, str(tmp_path / "a.tar.gz"), dataset=dataset))
    b = read_archive(create_archive(training_out, str(tmp_path / "b.tar.gz"), dataset=dataset))
    manifest_a, manifest_b = json.loads(a.pop(MANIFEST)), json.loads(b.pop(MANIFEST))
    assert a == b
    assert manifest_a["files"] == manifest_b["files"]


@pytest.mark.parametrize("tamper", ["change", "drop", "add"])
def test_verify_catches_tampering(training_out, tmp_path, tamper):
    location = create_archive(training_out, str(tmp_path / "x.tar.gz"))
    files = read_archive(location)
    if tamper == "change":
        files["metrics.json"] = b'{"base_model": "someone else"}'
    elif tamper == "drop":
        del files["tokenizer.json"]
    else:
        files["extra.bin"] = b"!"
    buffer = io.BytesIO()
    with tarfile.open(fileobj=buffer, mode="w:gz") as tar:
        for name, data in files.items():
            info = tarfile.TarInfo(name)
            info.size = len(data)
            tar.addfile(info, io.BytesIO(data))
    Path(location).write_bytes(buffer.getvalue())
    result = verify_archive(location)
    assert not result.ok
    expected = {
        "change": "metrics.json: size or sha256 differs",
        "drop": "tokenizer.json: listed",
        "add": "extra.bin: not listed",
    }
    assert any(expected[tamper] in problem for problem in result.problems)
    exit_code = CliRunner().invoke(app, ["verify", location]).exit_code
    assert exit_code == 1


def test_written_to_an_fsspec_url_and_verified_there(training_out):
    location = create_archive(training_out, "memory://archives")
    assert fsspec.filesystem("memory").exists(location.removeprefix("memory://"))
    assert verify_archive(location).ok
    result = CliRunner().invoke(app, ["verify", location])
    assert result.exit_code == 0, result.output
    assert "ok" in result.output


def test_refuses_a_folder_without_an_adapter(tmp_path):
    with pytest.raises(AgirError, match=r"no adapter_model\.safetensors"):
        create_archive(tmp_path, str(tmp_path / "x.tar.gz"))


def test_not_an_archive(tmp_path):
    (tmp_path / "x.tar.gz").write_bytes(b"plain text")
    with pytest.raises(AgirError, match="not a readable"):
        verify_archive(str(tmp_path / "x.tar.gz"))
