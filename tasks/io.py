"""Paths and bytes: reading files, hashing them, writing outputs atomically (``inputs.py`` finds them).

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
from pathlib import Path
from typing import Any

from agir_retrain.tasks.errors import ConfigError
from agir_retrain.tasks.filenames import REPORT_FILE


def default_cache_dir() -> Path:
    """The project's cache folder: ``$AGIR_CACHE_DIR`` or ``~/.cache/agir-retrain``."""
    return Path(os.environ.get("AGIR_CACHE_DIR", Path.home() / ".cache" / "agir-retrain"))


# mkstemp creates files 0600; outputs get the mode a plain open() would give them.
_UMASK = os.umask(0)
os.umask(_UMASK)


def is_url(location: str) -> bool:
    """Tell whether a location names a remote or protocol-prefixed path."""
    return "://" in location and not location.startswith("file://")


def local_path(location: str) -> str:
    """Strip a ``file://`` prefix; other locations are returned unchanged."""
    return location.removeprefix("file://")


def url_fs(location: str) -> tuple[Any, str]:
    """The fsspec filesystem and path of a URL (imported lazily: workers reading local
    files never pay for it)."""
    import fsspec

    return fsspec.core.url_to_fs(location)


def read_bytes(location: str) -> bytes:
    """Read a whole file from a local path or an fsspec URL."""
    if is_url(location):
        fs, path = url_fs(location)
        return fs.cat_file(path)
    with open(local_path(location), "rb") as handle:
        return handle.read()


def sha256_file(location: str, chunk_bytes: int = 1 << 22) -> str:
    """Hex sha256 of a file's content, read in chunks so memory stays flat."""
    digest = hashlib.sha256()
    if is_url(location):
        fs, path = url_fs(location)
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


def exists(location: str) -> bool:
    """Tell whether a file or folder exists, locally or at a URL."""
    if is_url(location):
        fs, path = url_fs(location)
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
            fs, path = url_fs(target)
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


@contextmanager
def output_set(out: str) -> Iterator[str]:
    """Yield a folder to write a command's outputs into; on success they replace ``out``'s as a set.

    Locally the folder is a sibling of ``out`` (same filesystem), and the swap happens
    under an exclusive lock on ``.<name>.lock`` beside it: ``out`` is renamed aside, the
    new folder renamed into its place, and anything of the old folder the new set does
    not replace (another command's outputs, the user's files) moved back. Readers see
    the old set or the new one, never a mix; two commands writing one ``out`` finish one
    after the other (the last wins whole). A swap cut short (a killed process) is
    completed by the next one. For a URL the files are uploaded one by one, the report
    last, since object stores have no folder rename. On error nothing under ``out`` changes.

    Raises:
        ConfigError: ``out`` is a file, or holds the working folder (it is swapped whole).
    """
    if is_url(out):
        with tempfile.TemporaryDirectory(prefix="agir-out-") as scratch:
            yield scratch
            files = sorted(p for p in Path(scratch).rglob("*") if p.is_file())
            for path in sorted(files, key=lambda p: p.name == REPORT_FILE):
                copy_file_atomic(str(path), join(out, path.relative_to(scratch).as_posix()))
        return
    final = Path(os.path.abspath(local_path(out)))
    if final.exists() and not final.is_dir():
        raise ConfigError(f"output folder {out} is a file; pass a folder (new or existing)")
    if Path.cwd().is_relative_to(final):
        raise ConfigError(f"output folder {out} holds the working folder; pass a folder of its own")
    final.parent.mkdir(parents=True, exist_ok=True)
    staging = Path(tempfile.mkdtemp(prefix=f".{final.name}.new-", dir=final.parent))
    try:
        os.chmod(staging, 0o777 & ~_UMASK)
        yield str(staging)
        with _folder_lock(final):
            _finish_swaps(final)
            _swap_in(staging, final)
    finally:
        shutil.rmtree(staging, ignore_errors=True)


@contextmanager
def _folder_lock(final: Path) -> Iterator[None]:
    import fcntl

    with open(final.with_name(f".{final.name}.lock"), "a+b") as handle:
        fcntl.flock(handle.fileno(), fcntl.LOCK_EX)
        try:
            yield
        finally:
            fcntl.flock(handle.fileno(), fcntl.LOCK_UN)


def _swap_in(staging: Path, final: Path) -> None:
    """Put ``staging`` in ``final``'s place; keep what of the old folder it does not replace."""
    if not final.exists():
        os.rename(staging, final)
        return
    old = final.with_name(f".{final.name}.old-{staging.name.rsplit('-', 1)[-1]}")
    os.rename(final, old)
    os.rename(staging, final)
    _finish_swaps(final)


def _finish_swaps(final: Path) -> None:
    """Complete swaps cut short: put an old folder back, or move back what it still holds."""
    for old in sorted(final.parent.glob(f".{glob.escape(final.name)}.old-*")):
        if not final.exists():
            os.rename(old, final)
            continue
        for entry in old.iterdir():
            if not os.path.lexists(final / entry.name):
                os.rename(entry, final / entry.name)
        shutil.rmtree(old, ignore_errors=True)
