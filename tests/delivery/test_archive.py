"""Archives: a manifest of every file, deterministic bytes, and verification that catches tampering."""

from __future__ import annotations

import hashlib
import io
import json
import tarfile
import tracemalloc
from pathlib import Path

import fsspec
import pytest
from typer.testing import CliRunner

from agir_retrain.flows.cli import app
from agir_retrain.tasks.delivery.archive import (
    ArchiveError,
    create_archive,
    dataset_hash,
    read_archive,
    verify_archive,
)
from agir_retrain.tasks.errors import AgirError
from agir_retrain.tasks.filenames import MANIFEST


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


@pytest.mark.parametrize("objective", ["sft", "kto", "grpo"])
def test_a_non_dpo_adapter_is_archived_with_the_hash_of_its_own_split(
    objective, training_out, dataset, tmp_path
):
    split = "sft" if objective == "grpo" else objective  # GRPO's prompts are the SFT rows'
    (dataset / split).mkdir(exist_ok=True)
    (dataset / split / "train.jsonl").write_text('{"prompt": "p", "completion": "c"}\n')
    (dataset / split / "eval.jsonl").write_text('{"prompt": "q", "completion": "d"}\n')
    metrics = json.loads((training_out / "metrics.json").read_text()) | {"objective": objective}
    (training_out / "metrics.json").write_text(json.dumps(metrics))

    location = create_archive(training_out, str(tmp_path / "archives"), dataset=dataset)
    assert verify_archive(location).ok
    manifest = json.loads(read_archive(location)[MANIFEST])
    assert manifest["dataset_sha256"] == dataset_hash(dataset, objective)
    assert manifest["dataset_sha256"] != dataset_hash(dataset)  # not the DPO pairs'
    (dataset / "dpo" / "train.jsonl").write_text('{"a": 3}\n')  # a file it never read
    again = create_archive(training_out, str(tmp_path / "again.tar.gz"), dataset=dataset)
    assert json.loads(read_archive(again)[MANIFEST])["dataset_sha256"] == manifest["dataset_sha256"]
    (dataset / split / "train.jsonl").write_text('{"prompt": "p2", "completion": "c"}\n')
    assert dataset_hash(dataset, objective) != manifest["dataset_sha256"]


def test_a_dataset_without_the_objectives_split_has_no_hash(dataset):
    assert dataset_hash(dataset, "kto") is None
    assert dataset_hash(dataset, "no-such-objective") is None


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
        "change": "metrics.json: s",  # the size or the sha256 differs
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


def _write(path: Path, members: list[tuple[tarfile.TarInfo, bytes | None]]) -> str:
    """A .tar.gz holding exactly these members, in this order."""
    with tarfile.open(path, mode="w:gz", format=tarfile.PAX_FORMAT) as tar:
        for info, data in members:
            tar.addfile(info, io.BytesIO(data) if data is not None else None)
    return str(path)


def _file(name: str, data: bytes) -> tuple[tarfile.TarInfo, bytes]:
    info = tarfile.TarInfo(name)
    info.size = len(data)
    return info, data


def _link(name: str, target: str, kind: bytes) -> tuple[tarfile.TarInfo, None]:
    info = tarfile.TarInfo(name)
    info.type, info.linkname = kind, target
    return info, None


def _dir(name: str) -> tuple[tarfile.TarInfo, None]:
    info = tarfile.TarInfo(name)
    info.type = tarfile.DIRTYPE
    return info, None


def _entry(data: bytes) -> dict:
    return {"sha256": hashlib.sha256(data).hexdigest(), "size": len(data)}


GOOD = {"adapter_model.safetensors": b"\x00weights", "tokenizer.json": b"{}"}


def _archive(
    tmp_path: Path, extra: list, listed: dict[str, bytes] | None = None, **manifest
) -> str:
    """A good archive plus hostile members; ``listed`` are added to the manifest (so only the
    member checks, not the listing, can catch them)."""
    files = {name: _entry(data) for name, data in {**GOOD, **(listed or {})}.items()}
    body = {"format": 1, "created": "2026-01-01T00:00:00+00:00", "files": files} | manifest
    members = [_file(MANIFEST, json.dumps(body).encode())]
    members += [_file(name, data) for name, data in GOOD.items()]
    return _write(tmp_path / "hostile.tar.gz", members + extra)


HOSTILE = {
    "parent": ([_file("../x", b"evil")], None, "../x: unsafe name (climbs out"),
    "absolute": ([_file("/tmp/x", b"evil")], None, "/tmp/x: unsafe name (absolute"),
    "symlink": (
        [_link("passwd", "/etc/passwd", tarfile.SYMTYPE)],
        None,
        "a symlink to /etc/passwd",
    ),
    "hardlink": (
        [_link("passwd", "/etc/passwd", tarfile.LNKTYPE)],
        None,
        "a hardlink to /etc/passwd",
    ),
    "symlink shadowing a listed file": (
        [_link("tokenizer.json", "/etc/passwd", tarfile.SYMTYPE)],
        None,
        "tokenizer.json: appears more than once",
    ),
    "duplicate name": (
        [_file("tokenizer.json", b"{}")],
        None,
        "tokenizer.json: appears more than once",
    ),
    "duplicate manifest": ([_file(MANIFEST, b"{}")], None, "MANIFEST.json: appears more than once"),
    "directory": ([_dir("dir")], None, "dir: not a regular file"),
    "fifo": ([_link("pipe", "", tarfile.FIFOTYPE)], None, "pipe: not a regular file"),
    "terminal escape": ([_file("\x1b[2Jx", b"")], None, "'\\x1b[2Jx': unsafe name"),
}


@pytest.mark.parametrize("case", sorted(HOSTILE))
def test_verify_rejects_unsafe_members(tmp_path, case):
    extra, listed, expected = HOSTILE[case]
    location = _archive(tmp_path, extra, listed)
    result = verify_archive(location)
    assert not result.ok
    assert any(expected in problem for problem in result.problems), result.problems
    outcome = CliRunner().invoke(app, ["verify", location])
    assert outcome.exit_code == 1
    assert "\x1b" not in outcome.output  # names are shown escaped, never raw


@pytest.mark.parametrize("name", ["../x", "/tmp/x", "a/../../x", "./x"])
def test_a_manifest_listing_an_unsafe_name_is_refused(tmp_path, name):
    location = _archive(tmp_path, [_file(name, b"evil")], {name: b"evil"})
    with pytest.raises(ArchiveError, match="unsafe or reserved file names listed"):
        verify_archive(location)


@pytest.mark.parametrize(
    ("manifest", "expected"),
    [
        (b"{}", "malformed at format: Field required"),
        (b"[]", "malformed"),
        (b"not json", "malformed"),
        (json.dumps({"format": 1, "created": "x", "files": {}}).encode(), "no adapter_model"),
        (
            json.dumps(
                {
                    "format": 1,
                    "created": "x",
                    "files": {"adapter_model.safetensors": {"sha256": "0" * 64}},
                }
            ).encode(),
            "malformed at files.adapter_model.safetensors.size: Field required",
        ),
        (
            json.dumps(
                {"format": 1, "created": "x", "files": ["adapter_model.safetensors"]}
            ).encode(),
            "malformed at files",
        ),
    ],
    ids=["empty", "list", "not-json", "no-adapter", "entry-without-size", "files-as-list"],
)
def test_a_malformed_manifest_is_one_line_and_exit_2(tmp_path, manifest, expected):
    location = _write(
        tmp_path / "bad.tar.gz",
        [_file(MANIFEST, manifest), *(_file(name, data) for name, data in GOOD.items())],
    )
    with pytest.raises(ArchiveError, match=expected):
        verify_archive(location)
    outcome = CliRunner().invoke(app, ["verify", location])
    assert outcome.exit_code == 2
    assert "Traceback" not in outcome.output
    assert expected.split(":")[0] in outcome.output


def test_the_manifest_must_come_first(tmp_path):
    good = _archive(tmp_path, [])
    members = list(reversed(list(read_archive(good).items())))
    location = _write(tmp_path / "late.tar.gz", [_file(name, data) for name, data in members])
    with pytest.raises(ArchiveError, match="first member is"):
        verify_archive(location)


def test_a_directory_or_missing_path_is_one_line_and_exit_2(tmp_path):
    for location in (str(tmp_path), str(tmp_path / "nothing.tar.gz")):
        outcome = CliRunner().invoke(app, ["verify", location])
        assert outcome.exit_code == 2, outcome.output
        assert "Traceback" not in outcome.output


class _Zeros(io.RawIOBase):
    """``size`` zero bytes, made as they are read."""

    def __init__(self, size: int) -> None:
        self.left = size

    def readable(self) -> bool:
        return True

    def readinto(self, buffer) -> int:
        n = min(len(buffer), self.left)
        buffer[:n] = bytes(n)
        self.left -= n
        return n


BIG = 64 << 20  # big enough that holding it whole would dwarf the streaming budget below


@pytest.mark.parametrize("declared", [BIG, 10])
def test_a_big_member_is_streamed_and_capped_at_its_declared_size(tmp_path, declared):
    digest = hashlib.sha256()
    left = BIG
    while left:
        digest.update(bytes(min(left, 1 << 20)))
        left -= min(left, 1 << 20)
    listed = {"sha256": digest.hexdigest(), "size": declared}
    files = {name: _entry(data) for name, data in GOOD.items()} | {"zeros.bin": listed}
    body = json.dumps({"format": 1, "created": "x", "files": files}).encode()
    info = tarfile.TarInfo("zeros.bin")
    info.size = BIG
    path = tmp_path / "big.tar.gz"
    with tarfile.open(path, mode="w:gz") as tar:
        for name, data in {MANIFEST: body, **GOOD}.items():
            tar.addfile(_file(name, data)[0], io.BytesIO(data))
        tar.addfile(info, io.BufferedReader(_Zeros(BIG)))
    tracemalloc.start()
    try:
        result = verify_archive(str(path))
        peak = tracemalloc.get_traced_memory()[1]
    finally:
        tracemalloc.stop()
    assert peak < 8 << 20, f"peak {peak} bytes: the member was held whole"
    if declared == BIG:
        assert result.ok, result.problems
    else:
        assert result.problems == [f"zeros.bin: size {BIG} differs from the manifest's 10"]
