"""Archive what training made, with a manifest, and check an archive against its manifest.

    agir-retrain archive adapter --dataset dataset --to archives/
    agir-retrain verify archives/agir-adapter-0123abcd4567.tar.gz

The archive is a ``.tar.gz`` of the adapter, tokenizer, metrics, curves, resolved config
and model card (not checkpoints), plus the dataset's ``report.json``, and a
``MANIFEST.json`` (its first member) giving each file's sha256 and size, the versions of
the key packages, the git commit, the dataset's hash and the base model. Entries are
sorted and their times and owners zeroed, so the same outputs give the same bytes; it is
written atomically, to a folder or an fsspec URL.

Verification trusts nothing in the archive: it is read as a stream, once, and every
member must be a regular file with a plain relative name, listed in the manifest, unique,
and of the listed size and sha256 (no member is read past its declared size, so memory
stays flat whatever the archive holds). The manifest itself is parsed against a schema
that requires the adapter. See docs/delivery.md.
"""

from __future__ import annotations

import gzip
import hashlib
import io
import posixpath
import subprocess
import tarfile
import tempfile
import zlib
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from datetime import UTC, datetime
from importlib import metadata
from pathlib import Path
from typing import IO, Annotated, Literal

import orjson
from pydantic import BaseModel, ConfigDict, Field, ValidationError, field_validator

from agir_retrain.tasks.errors import AgirError
from agir_retrain.tasks.filenames import (
    ADAPTER_FILE,
    MANIFEST,
    METRICS_FILE,
    REPORT_FILE,
)
from agir_retrain.tasks.io import atomic_output, is_url, join, local_path, sha256_file
from agir_retrain.tasks.lineage import read_lineage
from agir_retrain.tasks.objectives import ORIGINAL
from agir_retrain.tasks.settings.generations import Lineage

ADAPTER = ADAPTER_FILE
KEY_PACKAGES = (
    "agir-retrain", "torch", "transformers", "trl", "peft", "bitsandbytes", "accelerate",
    "datasets", "polars", "prefect", "ray",
)  # fmt: skip
SKIPPED = ("checkpoint-", "merged", "runs", "training_args.bin")  # bulky or replayable
MAX_MANIFEST_BYTES = 16 << 20  # a manifest lists files; megabytes of it is not a manifest
MAX_MEMBERS = 100_000  # bounds the work a hostile archive of empty members can cause
_CHUNK = 1 << 20


class ArchiveError(AgirError):
    """An archive cannot be read or its manifest cannot be trusted."""


class _Strict(BaseModel):
    model_config = ConfigDict(frozen=True, extra="forbid")


class ManifestEntry(_Strict):
    """One file's expected content."""

    sha256: Annotated[str, Field(pattern=r"^[0-9a-f]{64}$")]
    size: Annotated[int, Field(ge=0)]


class Manifest(_Strict):
    """``MANIFEST.json``: what the archive holds and where it came from."""

    format: Literal[1]
    created: str
    base_model: str | None = None
    dataset_sha256: str | None = None
    git_commit: str | None = None
    packages: dict[str, str | None] = Field(default_factory=dict)
    lineage: Lineage | None = None  # a window of generations: what the adapter learnt from
    files: dict[str, ManifestEntry]

    @field_validator("files")
    @classmethod
    def _adapter_and_safe_names(cls, files: dict[str, ManifestEntry]) -> dict[str, ManifestEntry]:
        unsafe = [name for name in files if unsafe_name(name) or name == MANIFEST]
        if unsafe:
            raise ValueError(f"unsafe or reserved file names listed: {_show(unsafe[0])}")
        if ADAPTER not in files:
            raise ValueError(f"no {ADAPTER} listed: an adapter archive must hold the adapter")
        return files


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


def unsafe_name(name: str) -> str | None:
    """Why a member name could not be extracted safely in place, or None if it can."""
    if not name or "\0" in name or "\\" in name:
        return "empty, or holds a NUL or a backslash"
    if name.startswith("/"):
        return "absolute path"
    parts = name.split("/")
    if ".." in parts:
        return "climbs out of the archive (..)"
    if posixpath.normpath(name) != name or "." in parts:
        return "not a plain relative path"
    if not name.isprintable():
        return "holds control characters"
    return None


def _show(name: str) -> str:
    """A member name fit for one terminal line (escapes and control characters quoted)."""
    return name if name.isprintable() else ascii(name)


def dataset_hash(dataset: Path, objective: str = ORIGINAL) -> str | None:
    """sha256 over the split an objective trains on (each file's name and content hash), if present.

    The files are the objective's own (``training/job_files.py``): an adapter's archive
    carries the hash of the split it read, not of another objective's it never read.
    """
    from agir_retrain.tasks.settings.train import TrainConfig
    from agir_retrain.tasks.training.job_files import job_inputs

    try:
        inputs = job_inputs(TrainConfig(dataset=str(dataset), objective=objective))
    except (AgirError, ValueError):  # no split of this objective here, or no such objective
        return None
    digest = hashlib.sha256()
    for file in (inputs.train, inputs.eval):
        if file is not None:
            name = Path(file.path).relative_to(dataset).as_posix()
            digest.update(f"{name}\0{sha256_file(file.path)}\n".encode())
    return digest.hexdigest()


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


def _training_files(training_out: Path) -> dict[str, Path]:
    files = {}
    for path in sorted(training_out.rglob("*")):
        relative = path.relative_to(training_out).as_posix()
        if path.is_file() and not path.is_symlink() and not relative.startswith(SKIPPED):
            files[relative] = path
    if ADAPTER not in files:
        raise AgirError(f"{training_out}: no {ADAPTER}; is this a training output folder?")
    return files


def archive_verified(adapter: str, target: str, dataset: str | None) -> str:
    """Archive a training output folder (local or a URL), then check the archive against it."""
    from agir_retrain.tasks.delivery.remote import local_copy

    with tempfile.TemporaryDirectory(prefix="agir-archive-") as scratch:
        adapter_dir = local_copy(adapter, Path(scratch) / "adapter")
        dataset_dir = local_copy(dataset, Path(scratch) / "dataset") if dataset else None
        location = create_archive(adapter_dir, target, dataset=dataset_dir)
    result = verify_archive(location)
    if not result.ok:
        raise ArchiveError(f"{location} does not match its manifest: {'; '.join(result.problems)}")
    return location


def create_archive(training_out: Path, target: str, *, dataset: Path | None = None) -> str:
    """Write the archive of a training output folder; return where it is.

    ``target`` is a ``.tar.gz`` path or URL, or a folder (local or URL) that receives
    ``agir-adapter-<dataset hash>.tar.gz``.
    """
    files = _training_files(training_out)
    metrics = orjson.loads(files[METRICS_FILE].read_bytes()) if METRICS_FILE in files else {}
    dataset_sha = dataset_hash(dataset, metrics.get("objective") or ORIGINAL) if dataset else None
    if dataset and (dataset / REPORT_FILE).is_file():
        files[f"dataset/{REPORT_FILE}"] = dataset / REPORT_FILE
    lineage = read_lineage(training_out)
    manifest = {
        "format": 1,
        "created": datetime.now(UTC).isoformat(timespec="seconds"),
        "base_model": metrics.get("base_model"),
        "dataset_sha256": dataset_sha,
        "git_commit": _git_commit(),
        "packages": _packages(),
        **({"lineage": lineage.model_dump(mode="json")} if lineage else {}),
        "files": {
            name: {"sha256": sha256_file(str(path)), "size": path.stat().st_size}
            for name, path in sorted(files.items())
        },
    }
    manifest_bytes = orjson.dumps(manifest, option=orjson.OPT_INDENT_2 | orjson.OPT_SORT_KEYS)
    location = (
        target
        if target.endswith(".tar.gz")
        else join(
            target,
            f"agir-adapter-{(dataset_sha or hashlib.sha256(manifest_bytes).hexdigest())[:12]}.tar.gz",
        )
    )
    with atomic_output(location) as staged, open(staged, "wb") as handle:
        _write_tar_gz(handle, manifest_bytes, files)
    return location


def _write_tar_gz(handle: IO[bytes], manifest: bytes, files: dict[str, Path]) -> None:
    """A gzipped tar: the manifest first, then the files sorted, times and owners zeroed."""
    with (
        gzip.GzipFile(fileobj=handle, mode="wb", mtime=0) as zipped,
        tarfile.open(fileobj=zipped, mode="w", format=tarfile.PAX_FORMAT) as tar,
    ):
        tar.addfile(_info(MANIFEST, len(manifest)), io.BytesIO(manifest))
        for name in sorted(files):
            with open(files[name], "rb") as source:
                tar.addfile(_info(name, files[name].stat().st_size), source)


def _info(name: str, size: int) -> tarfile.TarInfo:
    info = tarfile.TarInfo(name)
    info.size, info.mode, info.mtime = size, 0o644, 0
    return info


@contextmanager
def _open_stream(location: str) -> Iterator[tarfile.TarFile]:
    """The archive as a forward-only tar stream (nothing is read ahead or held whole)."""
    if is_url(location):
        import fsspec

        opener = fsspec.open(location, "rb")
    else:
        path = Path(local_path(location))
        if not path.is_file():
            raise ArchiveError(f"{location}: not a file; give the path of a .tar.gz archive")
        opener = open(path, "rb")
    try:
        # GzipFile bounds each decompression step; tarfile's own "r|gz" can inflate one
        # 10 KiB read of zeros into 10 MiB at once.
        with (
            opener as raw,
            gzip.GzipFile(fileobj=raw, mode="rb") as unzipped,
            tarfile.open(fileobj=unzipped, mode="r|") as tar,
        ):
            yield tar
    except (tarfile.TarError, EOFError, gzip.BadGzipFile, zlib.error) as error:
        raise ArchiveError(f"{location}: not a readable .tar.gz archive: {error}") from error
    except FileNotFoundError as error:
        raise ArchiveError(f"{location}: no such archive") from error


def read_archive(location: str) -> dict[str, bytes]:
    """Every regular file of a small archive (local path or URL), by name; for tests and tools."""
    files: dict[str, bytes] = {}
    with _open_stream(location) as tar:
        for member in tar:
            if member.isreg():
                handle = tar.extractfile(member)
                files[member.name] = handle.read() if handle else b""
    return files


def _hash_member(handle: IO[bytes], size: int) -> str:
    """sha256 of exactly ``size`` bytes of a member, read in chunks."""
    digest = hashlib.sha256()
    left = size
    while left > 0:
        chunk = handle.read(min(_CHUNK, left))
        if not chunk:
            raise ArchiveError("archive ends inside a member: truncated")
        digest.update(chunk)
        left -= len(chunk)
    return digest.hexdigest()


def _parse_manifest(tar: tarfile.TarFile, member: tarfile.TarInfo, location: str) -> Manifest:
    if not member.isreg():
        raise ArchiveError(f"{location}: {MANIFEST} is not a regular file")
    if member.size > MAX_MANIFEST_BYTES:
        raise ArchiveError(f"{location}: {MANIFEST} is {member.size} bytes; too big for a manifest")
    handle = tar.extractfile(member)
    data = handle.read(member.size) if handle else b""
    try:
        return Manifest.model_validate_json(data)
    except ValidationError as error:
        first = error.errors()[0]
        where = ".".join(str(part) for part in first["loc"]) or "top level"
        raise ArchiveError(
            f"{location}: {MANIFEST} is malformed at {_show(where)}: {first['msg']} "
            f"({error.error_count()} problem(s))"
        ) from error


def verify_archive(location: str) -> Verification:
    """Check every member against the manifest: safe, regular, listed once, same size and sha256.

    Raises:
        ArchiveError: not a readable ``.tar.gz``, or its manifest is missing, not first,
            duplicated or malformed (nothing in it can then be trusted).
    """
    problems: list[str] = []
    seen: set[str] = set()
    manifest: Manifest | None = None
    with _open_stream(location) as tar:
        for count, member in enumerate(tar):
            if count >= MAX_MEMBERS:
                raise ArchiveError(f"{location}: more than {MAX_MEMBERS} members")
            name = member.name
            if manifest is None:
                if name != MANIFEST:
                    raise ArchiveError(
                        f"{location}: the first member is {_show(name)}, not {MANIFEST}"
                    )
                manifest = _parse_manifest(tar, member, location)
                continue
            problem = _member_problem(tar, member, manifest, seen)
            seen.add(name)
            if problem:
                problems.append(f"{_show(name)}: {problem}")
    if manifest is None:
        raise ArchiveError(f"{location}: empty archive, no {MANIFEST}")
    problems += [
        f"{_show(name)}: listed in the manifest but missing"
        for name in sorted(set(manifest.files) - seen)
    ]
    return Verification(location=location, files=len(manifest.files), problems=problems)


def _member_problem(
    tar: tarfile.TarFile, member: tarfile.TarInfo, manifest: Manifest, seen: set[str]
) -> str | None:
    """What is wrong with one member after the manifest, or None; reads at most its listed size."""
    name = member.name
    if name in seen or name == MANIFEST:
        return "appears more than once in the archive"
    why = unsafe_name(name)
    if why:
        return f"unsafe name ({why})"
    if member.issym() or member.islnk():
        kind = "symlink" if member.issym() else "hardlink"
        return f"a {kind} to {_show(member.linkname)}, not a regular file"
    if not member.isreg():
        return "not a regular file"
    expected = manifest.files.get(name)
    if expected is None:
        return "not listed in the manifest"
    if member.size != expected.size:
        return f"size {member.size} differs from the manifest's {expected.size}"
    handle = tar.extractfile(member)
    if handle is None or _hash_member(handle, member.size) != expected.sha256:
        return "sha256 differs from the manifest"
    return None
