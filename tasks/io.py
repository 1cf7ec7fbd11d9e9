"""Paths and bytes: expanding inputs, reading them, hashing them, writing outputs atomically.

Local paths and fsspec URLs (``file://``, ``s3://``, ``memory://``, ...) are treated
alike; local files take a fast path with no fsspec call.
"""

from __future__ import annotations

import glob
import hashlib
import os
import shutil
import tempfile
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any

RUN_FILE_SUFFIX = ".json"
# mkstemp creates files 0600; outputs get the mode a plain open() would give them.
_UMASK = os.umask(0)
os.umask(_UMASK)
_GLOB_CHARS = frozenset("*?[")


def is_url(location: str) -> bool:
    """Tell whether a location names a remote or protocol-prefixed path."""
    return "://" in location and not location.startswith("file://")


def local_path(location: str) -> str:
    """Strip a ``file://`` prefix; other locations are returned unchanged."""
    return location.removeprefix("file://")


@dataclass(frozen=True, slots=True)
class InputFile:
    """One input file found by ``expand_inputs``: where it is, how big, and (for object
    storage) the store's own content fingerprint, such as an S3 ETag."""

    location: str
    size_bytes: int
    fingerprint: str | None = None


def expand_inputs(locations: list[str]) -> list[InputFile]:
    """List the run files named by files, folders (recursive), globs or URLs.

    Folders contribute every ``*.json`` below them; a file named directly is taken
    whatever its suffix. The result is sorted and free of duplicates, so the same
    inputs always give the same order.

    Raises:
        FileNotFoundError: a location matches nothing.
    """
    found: dict[str, InputFile] = {}
    for location in locations:
        matches = _expand_url(location) if is_url(location) else _expand_local(location)
        if not matches:
            raise FileNotFoundError(f"no run files at {location!r}: check the path or pattern")
        found.update((file.location, file) for file in matches)
    return [found[location] for location in sorted(found)]


def _expand_local(location: str) -> list[InputFile]:
    path = local_path(location)
    if any(char in path for char in _GLOB_CHARS):
        candidates = [p for p in glob.glob(path, recursive=True) if os.path.isfile(p)]
    elif os.path.isdir(path):
        candidates = [
            os.path.join(root, name)
            for root, _dirs, names in os.walk(path)
            for name in names
            if name.endswith(RUN_FILE_SUFFIX)
        ]
    elif os.path.isfile(path):
        candidates = [path]
    else:
        candidates = []
    return [InputFile(os.path.abspath(p), os.path.getsize(p)) for p in candidates]


def _fs(location: str) -> tuple[Any, str]:
    """The fsspec filesystem and path of a URL (imported lazily: workers reading local
    files never pay for it)."""
    import fsspec

    return fsspec.core.url_to_fs(location)


def _expand_url(location: str) -> list[InputFile]:
    fs, path = _fs(location)
    if any(char in path for char in _GLOB_CHARS):
        infos = fs.glob(path, detail=True)
    elif fs.isdir(path):
        infos = {p: i for p, i in fs.find(path, detail=True).items() if p.endswith(RUN_FILE_SUFFIX)}
    elif fs.exists(path):
        infos = {path: fs.info(path)}
    else:
        infos = {}
    return [
        InputFile(fs.unstrip_protocol(p), int(info.get("size") or 0), _store_fingerprint(info))
        for p, info in infos.items()
        if info.get("type", "file") == "file"
    ]


def _store_fingerprint(info: dict[str, Any]) -> str | None:
    """What an object store says identifies a file's content, without reading it."""
    for key in ("ETag", "etag", "md5Hash", "content_md5", "checksum"):
        if info.get(key):
            return f"{key}:{info[key]}"
    return None


def read_bytes(location: str) -> bytes:
    """Read a whole file from a local path or an fsspec URL."""
    if is_url(location):
        fs, path = _fs(location)
        return fs.cat_file(path)
    with open(local_path(location), "rb") as handle:
        return handle.read()


def sha256_bytes(data: bytes) -> str:
    """Hex sha256 of some bytes."""
    return hashlib.sha256(data).hexdigest()


def sha256_file(location: str, chunk_bytes: int = 1 << 22) -> str:
    """Hex sha256 of a file's content, read in chunks so memory stays flat."""
    digest = hashlib.sha256()
    if is_url(location):
        fs, path = _fs(location)
        opener = fs.open(path, "rb")
    else:
        opener = open(local_path(location), "rb")
    with opener as handle:
        while chunk := handle.read(chunk_bytes):
            digest.update(chunk)
    return digest.hexdigest()


def join(base: str, *parts: str) -> str:
    """Join path parts onto a local folder or a URL."""
    if is_url(base):
        return "/".join([base.rstrip("/"), *parts])
    return os.path.join(local_path(base), *parts)


def make_dirs(location: str) -> None:
    """Create a folder (local or URL) and its parents; an existing one is fine."""
    if is_url(location):
        fs, path = _fs(location)
        fs.makedirs(path, exist_ok=True)
    else:
        os.makedirs(local_path(location), exist_ok=True)


def exists(location: str) -> bool:
    """Tell whether a file or folder exists, locally or at a URL."""
    if is_url(location):
        fs, path = _fs(location)
        return fs.exists(path)
    return os.path.exists(local_path(location))


@contextmanager
def atomic_output(target: str) -> Iterator[Path]:
    """Yield a local temporary path; on success it replaces ``target`` in one step.

    Locally the temporary file sits in the target's folder and ``os.replace`` swaps
    it in, so readers see the old file or the new one, never half of one. For a URL
    the finished file is uploaded in one put (object stores make that atomic). On
    error the temporary file is removed and the target is left untouched.
    """
    if is_url(target):
        with tempfile.TemporaryDirectory(prefix="agir-") as scratch:
            staged = Path(scratch) / Path(target).name
            yield staged
            fs, path = _fs(target)
            fs.makedirs(os.path.dirname(path), exist_ok=True)
            fs.put_file(str(staged), path)
        return
    final = Path(local_path(target))
    final.parent.mkdir(parents=True, exist_ok=True)
    handle, staged_name = tempfile.mkstemp(prefix=f".{final.name}.", dir=final.parent)
    os.close(handle)
    staged = Path(staged_name)
    try:
        yield staged
        os.chmod(staged, 0o666 & ~_UMASK)
        os.replace(staged, final)
    except BaseException:
        staged.unlink(missing_ok=True)
        raise


def write_bytes_atomic(target: str, data: bytes) -> None:
    """Write bytes to a file or URL atomically."""
    with atomic_output(target) as staged:
        staged.write_bytes(data)


def write_json_atomic(target: str, value: object) -> None:
    """Write a value as indented, key-sorted JSON, atomically (sorted keys: stable bytes)."""
    # Imported here: the training program imports this module on GPU machines without orjson.
    import orjson

    write_bytes_atomic(
        target, orjson.dumps(value, option=orjson.OPT_INDENT_2 | orjson.OPT_SORT_KEYS) + b"\n"
    )


def copy_file_atomic(source: str, target: str) -> None:
    """Copy a local file to a local path or URL atomically."""
    with atomic_output(target) as staged:
        shutil.copyfile(local_path(source), staged)
