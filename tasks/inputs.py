"""Finding the input run files: expanding paths, globs, folders and URLs; reading them safely.

Hostile inputs are expected: FIFOs, sockets and broken links named ``*.json``, loops
of folder links, files far over the size limit, the same bytes under two names. Each
is found in bounded time and none is opened blindly; the reader quarantines what is
not a regular file.
"""

from __future__ import annotations

import errno
import fnmatch
import os
import stat
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass, replace
from typing import Any

from agir_retrain.tasks.io import is_url, local_path, url_fs

RUN_FILE_SUFFIX = ".json"
_GLOB_CHARS = frozenset("*?[")


@dataclass(frozen=True, slots=True)
class InputFile:
    """One input file found by ``expand_inputs``: where it is, how big, and (for object
    storage) the store's own content fingerprint, such as an S3 ETag. ``duplicate_of``
    names an earlier file (by sorted path) with the same bytes: see ``mark_duplicates``."""

    location: str
    size_bytes: int
    fingerprint: str | None = None
    duplicate_of: str | None = None


class NotARegularFileError(OSError):
    """A path names something that is not a regular file (a FIFO, a socket, a folder, ...)."""


class BrokenLinkError(OSError):
    """A symbolic link whose target is missing, or a loop of links."""


def expand_inputs(locations: list[str]) -> list[InputFile]:
    """List the run files named by files, folders (recursive), globs or URLs.

    Folders contribute every ``*.json`` below them; a file named directly is taken
    whatever its suffix. Links to folders are followed, each real folder once (a link
    loop ends the descent); a file reached by several paths is listed once, under the
    first path in sorted order. Entries that are not regular files (FIFOs, sockets,
    broken links) are listed too, so that the reader quarantines them with a reason;
    none is opened here. The result is sorted, so the same inputs give the same order.

    Raises:
        FileNotFoundError: a location matches nothing.
    """
    found: dict[str, InputFile] = {}
    for location in locations:
        matches = _expand_url(location) if is_url(location) else _expand_local(location)
        if not matches:
            raise FileNotFoundError(f"no run files at {location!r}: check the path or pattern")
        found.update((file.location, file) for file in matches)
    files = [found[location] for location in sorted(found)]
    return _first_path_per_real_file(files)


def _first_path_per_real_file(files: list[InputFile]) -> list[InputFile]:
    seen: set[str] = set()
    kept = []
    for file in files:
        real = file.location if is_url(file.location) else os.path.realpath(file.location)
        if real not in seen:
            seen.add(real)
            kept.append(file)
    return kept


def _expand_local(location: str) -> list[InputFile]:
    path = local_path(location)
    if any(char in path for char in _GLOB_CHARS):
        candidates = _glob(os.path.abspath(path))
    elif os.path.isdir(path):
        candidates = [p for p in _walk(path) if p.endswith(RUN_FILE_SUFFIX)]
    elif os.path.lexists(path):
        candidates = [path]
    else:
        candidates = []
    return [InputFile(os.path.abspath(p), _size(p)) for p in candidates]


def _size(path: str) -> int:
    """A regular file's size; 0 for anything else (the reader quarantines those)."""
    try:
        info = os.stat(path)
    except OSError:
        return 0
    return info.st_size if stat.S_ISREG(info.st_mode) else 0


def _is_dir(entry: os.DirEntry) -> bool:
    try:
        return entry.is_dir()  # follows links; a broken link or a loop is not a folder
    except OSError:
        return False


def _entries(folder: str) -> list[os.DirEntry]:
    """A folder's entries by name (a real folder reached by two paths is listed under the
    path met first, so the order must not depend on the filesystem's)."""
    try:
        return sorted(os.scandir(folder), key=lambda entry: entry.name)
    except OSError:
        return []  # unreadable folder: nothing of it can be listed


def _walk(top: str) -> Iterator[str]:
    """Every non-folder entry below ``top``, following links to folders, each real folder once."""
    visited: set[str] = set()
    pending = [top]
    while pending:
        folder = pending.pop()
        real = os.path.realpath(folder)
        if real in visited:
            continue
        visited.add(real)
        subfolders = []
        for entry in _entries(folder):
            if _is_dir(entry):
                subfolders.append(entry.path)
            else:
                yield entry.path
        pending.extend(reversed(subfolders))  # depth first, in name order


def _glob(pattern: str) -> list[str]:
    """Non-folder paths matching a glob (``**`` spans folders), each real folder visited once.

    ``glob.glob`` follows links to folders with no memory of where it has been, so a
    link loop under ``dir/**`` never ends; this walk remembers each (real folder,
    pattern position) it has matched from. Names starting with a dot match only a
    pattern part that starts with one, as in ``glob``.
    """
    parts = pattern.split(os.sep)
    fixed = next(i for i, part in enumerate(parts) if any(c in part for c in _GLOB_CHARS))
    root = os.sep.join(parts[:fixed]) or os.sep
    rest = parts[fixed:]
    matches: list[str] = []
    visited: set[tuple[str, int]] = set()

    def visit(folder: str, position: int) -> None:
        key = (os.path.realpath(folder), position)
        if key in visited:
            return
        visited.add(key)
        part = rest[position]
        last = position == len(rest) - 1
        if part == "**":
            if last:  # "dir/**" names every entry below dir
                matches.extend(_walk(folder))
                return
            visit(folder, position + 1)  # ** matches no folder at all...
        for entry in _entries(folder):
            if entry.name.startswith(".") and not part.startswith("."):
                continue
            if part == "**":
                if _is_dir(entry):
                    visit(entry.path, position)  # ...or one more, and so on
            elif fnmatch.fnmatchcase(entry.name, part):
                if not last and _is_dir(entry):
                    visit(entry.path, position + 1)
                elif last and not _is_dir(entry):
                    matches.append(entry.path)

    if os.path.isdir(root):
        visit(root, 0)
    return matches


def _expand_url(location: str) -> list[InputFile]:
    fs, path = url_fs(location)
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


def read_run_bytes(location: str, limit: int) -> tuple[bytes, int]:
    """Read at most ``limit + 1`` bytes of a regular file; return them and the file's size.

    Checked before anything is read: a FIFO would block the reader forever, and a
    file over the limit is not read beyond it (its size is what the caller reports).

    Raises:
        NotARegularFileError: a FIFO, socket, device or folder.
        BrokenLinkError: a link whose target is missing, or a loop of links.
        OSError: any other failure to stat or read.
    """
    if is_url(location):
        fs, path = url_fs(location)
        info = fs.info(path)
        if info.get("type", "file") != "file":
            raise NotARegularFileError(f"{location} is a {info.get('type')}, not a file")
        with fs.open(path, "rb") as handle:
            return handle.read(limit + 1), int(info.get("size") or 0)
    path = local_path(location)
    try:
        info = os.stat(path)
    except FileNotFoundError as error:
        if os.path.islink(path):
            raise BrokenLinkError(f"{path} is a link to a missing file") from error
        raise
    except OSError as error:
        if error.errno == errno.ELOOP:
            raise BrokenLinkError(f"{path} is a loop of symbolic links") from error
        raise
    _require_regular(path, info.st_mode)
    # O_NONBLOCK: should the path become a FIFO after the stat, opening it does not wait.
    descriptor = os.open(path, os.O_RDONLY | os.O_NONBLOCK | getattr(os, "O_CLOEXEC", 0))
    with open(descriptor, "rb", closefd=True) as handle:
        opened = os.fstat(handle.fileno())
        _require_regular(path, opened.st_mode)
        # read(n) allocates n bytes up front: ask for the file's size, not the limit.
        want = min(limit, opened.st_size) + 1
        data = handle.read(want)
        if len(data) == want <= limit:  # the file grew since the stat: read on to the limit
            data += handle.read(limit + 1 - want)
        return data, opened.st_size


_KINDS = (
    (stat.S_ISDIR, "a folder"),
    (stat.S_ISFIFO, "a FIFO (named pipe)"),
    (stat.S_ISSOCK, "a socket"),
    (stat.S_ISCHR, "a character device"),
    (stat.S_ISBLK, "a block device"),
)


def _require_regular(path: str, mode: int) -> None:
    if stat.S_ISREG(mode):
        return
    kind = next((name for test, name in _KINDS if test(mode)), "not a regular file")
    raise NotARegularFileError(f"{path} is {kind}, not a regular file")


def file_digest(location: str, chunk_bytes: int = 1 << 22) -> str:
    """Hex XXH3-128 of a file's content, read in chunks (fast: for finding identical files)."""
    import xxhash

    digest = xxhash.xxh3_128()
    if is_url(location):
        fs, path = url_fs(location)
        opener = fs.open(path, "rb")
    else:
        opener = open(local_path(location), "rb")
    with opener as handle:
        while chunk := handle.read(chunk_bytes):
            digest.update(chunk)
    return digest.hexdigest()


def mark_duplicates(
    files: Sequence[InputFile], digest_of: Callable[[InputFile], str] | None = None
) -> list[InputFile]:
    """Mark each file whose bytes equal an earlier file's (in the order given) as its duplicate.

    Only files sharing a size with another are hashed (``digest_of``, by default the
    store's fingerprint or ``file_digest``), so a corpus of distinct files costs one
    stat each. The first file of each set of equals is kept; which one that is depends
    only on the sorted paths, never on how the corpus is later cut into shards.
    """
    digest_of = digest_of or _content_identity
    by_size: dict[int, list[InputFile]] = {}
    for file in files:
        if file.size_bytes > 0:
            by_size.setdefault(file.size_bytes, []).append(file)
    first_of: dict[str, str] = {}
    for group in by_size.values():
        if len(group) < 2:
            continue
        seen: dict[str, str] = {}
        for file in group:
            try:
                digest = digest_of(file)
            except OSError:
                continue  # unreadable: the reader quarantines it with the reason
            if digest in seen:
                first_of[file.location] = seen[digest]
            else:
                seen[digest] = file.location
    return [
        replace(file, duplicate_of=first_of[file.location]) if file.location in first_of else file
        for file in files
    ]


def _content_identity(file: InputFile) -> str:
    return file.fingerprint or file_digest(file.location)
