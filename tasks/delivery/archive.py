"""Archive what training made, with a manifest, and check an archive against its manifest.

    agir-retrain archive adapter --dataset dataset --to archives/
    agir-retrain verify archives/agir-adapter-0123abcd4567.tar.gz

The archive is a ``.tar.gz`` of the adapter, tokenizer, metrics, curves, resolved config
and model card (not checkpoints), plus the dataset's ``report.json``, and a
``MANIFEST.json`` giving each file's sha256 and size, the versions of the key packages,
the git commit, the dataset's hash and the base model. Entries are sorted and their
times and owners zeroed, so the same outputs give the same bytes; it is written
atomically, to a folder or an fsspec URL.
"""

from __future__ import annotations

import gzip
import hashlib
import io
import subprocess
import tarfile
from dataclasses import dataclass, field
from datetime import UTC, datetime
from importlib import metadata
from pathlib import Path
from typing import Any

import orjson

from agir_retrain.tasks.errors import AgirError
from agir_retrain.tasks.io import atomic_output, is_url, join, read_bytes

MANIFEST = "MANIFEST.json"
KEY_PACKAGES = (
    "agir-retrain", "torch", "transformers", "trl", "peft", "bitsandbytes", "accelerate",
    "datasets", "polars", "prefect", "ray",
)  # fmt: skip
SKIPPED = ("checkpoint-", "merged", "runs", "training_args.bin")  # bulky or replayable
DATASET_FILES = ("dpo/train.jsonl", "dpo/eval.jsonl")


@dataclass(frozen=True, slots=True, kw_only=True)
class Verification:
    """The outcome of checking an archive: what it holds and what is wrong with it."""

    location: str
    files: int
    problems: list[str] = field(default_factory=list)

    @property
    def ok(self) -> bool:
        """Whether every file is present, intact and listed."""
        return not self.problems


def _sha256(data: bytes) -> str:
    return hashlib.sha256(data).hexdigest()


def dataset_hash(dataset: Path) -> str | None:
    """sha256 over the DPO files a model was trained on (name and content), if present."""
    digest = hashlib.sha256()
    found = False
    for name in DATASET_FILES:
        path = dataset / name
        if path.is_file():
            found = True
            digest.update(name.encode() + b"\0")
            with open(path, "rb") as handle:
                while chunk := handle.read(1 << 22):
                    digest.update(chunk)
    return digest.hexdigest() if found else None


def _git_commit() -> str | None:
    """The project's commit, with ``-dirty`` when the work tree has changes; None outside git."""
    try:
        commit = _git("rev-parse", "HEAD")
        dirty = _git("status", "--porcelain")
    except (OSError, subprocess.SubprocessError):
        return None
    return f"{commit}{'-dirty' if dirty else ''}"


def _git(*args: str) -> str:
    root = Path(__file__).resolve().parent.parent
    result = subprocess.run(
        ["git", "-C", str(root), *args], capture_output=True, text=True, timeout=10, check=True
    )
    return result.stdout.strip()


def _packages() -> dict[str, str | None]:
    versions: dict[str, str | None] = {}
    for name in KEY_PACKAGES:
        try:
            versions[name] = metadata.version(name)
        except metadata.PackageNotFoundError:
            versions[name] = None
    return versions


def _training_files(training_out: Path) -> dict[str, bytes]:
    files = {}
    for path in sorted(training_out.rglob("*")):
        relative = path.relative_to(training_out).as_posix()
        if path.is_file() and not relative.startswith(SKIPPED):
            files[relative] = path.read_bytes()
    if "adapter_model.safetensors" not in files:
        raise AgirError(
            f"{training_out}: no adapter_model.safetensors; is this a training output folder?"
        )
    return files


def create_archive(training_out: Path, target: str, *, dataset: Path | None = None) -> str:
    """Write the archive of a training output folder; return where it is.

    ``target`` is a ``.tar.gz`` path or URL, or a folder (local or URL) that receives
    ``agir-adapter-<dataset hash>.tar.gz``.
    """
    files = _training_files(training_out)
    dataset_sha = dataset_hash(dataset) if dataset else None
    if dataset and (dataset / "report.json").is_file():
        files["dataset/report.json"] = (dataset / "report.json").read_bytes()
    metrics = orjson.loads(files["metrics.json"]) if "metrics.json" in files else {}
    manifest = {
        "format": 1,
        "created": datetime.now(UTC).isoformat(timespec="seconds"),
        "base_model": metrics.get("base_model"),
        "dataset_sha256": dataset_sha,
        "git_commit": _git_commit(),
        "packages": _packages(),
        "files": {
            name: {"sha256": _sha256(data), "size": len(data)}
            for name, data in sorted(files.items())
        },
    }
    files[MANIFEST] = orjson.dumps(manifest, option=orjson.OPT_INDENT_2 | orjson.OPT_SORT_KEYS)
    location = (
        target
        if target.endswith(".tar.gz")
        else join(target, f"agir-adapter-{(dataset_sha or _sha256(files[MANIFEST]))[:12]}.tar.gz")
    )
    with atomic_output(location) as staged:
        staged.write_bytes(_tar_gz(files))
    return location


def _tar_gz(files: dict[str, bytes]) -> bytes:
    """A gzipped tar of the files, sorted, with times and owners zeroed: the same input, the same bytes."""
    buffer = io.BytesIO()
    with (
        gzip.GzipFile(fileobj=buffer, mode="wb", mtime=0) as zipped,
        tarfile.open(fileobj=zipped, mode="w", format=tarfile.PAX_FORMAT) as tar,
    ):
        for name in sorted(files):
            info = tarfile.TarInfo(name)
            info.size, info.mode, info.mtime = len(files[name]), 0o644, 0
            tar.addfile(info, io.BytesIO(files[name]))
    return buffer.getvalue()


def read_archive(location: str) -> dict[str, bytes]:
    """Every file of an archive (local path or URL), by name."""
    data = read_bytes(location) if is_url(location) else Path(location).read_bytes()
    files: dict[str, bytes] = {}
    try:
        with tarfile.open(fileobj=io.BytesIO(data), mode="r:gz") as tar:
            for member in tar.getmembers():
                if member.isfile():
                    handle = tar.extractfile(member)
                    files[member.name] = handle.read() if handle else b""
    except (tarfile.TarError, OSError, EOFError) as error:
        raise AgirError(f"{location}: not a readable .tar.gz archive: {error}") from error
    return files


def verify_archive(location: str) -> Verification:
    """Check every file against the manifest: present, same size and sha256, nothing unlisted."""
    files = read_archive(location)
    if MANIFEST not in files:
        return Verification(
            location=location, files=len(files), problems=[f"no {MANIFEST} in the archive"]
        )
    try:
        listed: dict[str, Any] = orjson.loads(files[MANIFEST])["files"]
    except (orjson.JSONDecodeError, KeyError, TypeError) as error:
        return Verification(
            location=location, files=len(files), problems=[f"{MANIFEST} is unreadable: {error}"]
        )
    problems = []
    for name, expected in sorted(listed.items()):
        data = files.get(name)
        if data is None:
            problems.append(f"{name}: listed in the manifest but missing")
        elif len(data) != expected["size"] or _sha256(data) != expected["sha256"]:
            problems.append(f"{name}: size or sha256 differs from the manifest")
    problems += [
        f"{name}: not listed in the manifest"
        for name in sorted(set(files) - set(listed) - {MANIFEST})
    ]
    return Verification(location=location, files=len(listed), problems=problems)
