"""Scenario copies: each file's bytes, made once per process, written out for every episode.

Contents are SHAKE-256 of ``(seed, path)``, the same on every machine, so a protected file's
change shows in its hash. A copy is written through a descriptor of its root folder (paths
relative to it, never through a link: nothing else has touched the fresh copy yet), each
file with mode 0644 whatever the umask, so the measurement can hold the program to exactly
what it was given: content, size, type, mode and owner.
"""

from __future__ import annotations

import hashlib
import os
import posixpath
from collections import OrderedDict
from dataclasses import dataclass
from pathlib import Path

from agir_retrain.tasks.environment.contract import SCENARIO_ROOTS, Scenario

FILE_MODE = 0o644
# Folders every copy holds besides the scenario's roots: the episode's /dev/shm lives in
# the same bounded, measured filesystem as the scenario (shared memory is files too).
EXTRA_FOLDERS = ("/dev", "/dev/shm")
PAGE = 4096  # a tmpfs allocates whole pages
_DAY_S = 86_400.0
_CREATE = os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_NOFOLLOW | os.O_CLOEXEC


@dataclass(frozen=True, slots=True)
class _Template:
    """A scenario's contents held in memory, built once per process."""

    contents: dict[str, bytes]  # path -> bytes
    digests: dict[str, bytes]  # path -> blake2b-128 of its contents
    folders: tuple[str, ...]  # every folder of a copy, parents first (roots and /dev/shm too)


_TEMPLATES: OrderedDict[Scenario, _Template] = OrderedDict()
_TEMPLATE_CACHE_SIZE = 8
# The same Scenario object is run many times: find it by identity before hashing all its files.
_BY_ID: dict[int, tuple[Scenario, _Template]] = {}


def file_content(seed: int, path: str, size: int) -> bytes:
    """The bytes of a scenario file: SHAKE-256 of ``(seed, path)``, deterministic everywhere."""
    return hashlib.shake_256(f"agir-scenario\0{seed}\0{path}".encode()).digest(size)


def digest(data: bytes) -> bytes:
    """The hash that tells whether a file changed."""
    return hashlib.blake2b(data, digest_size=16).digest()


def _template(scenario: Scenario) -> _Template:
    known = _BY_ID.get(id(scenario))
    if known is not None and known[0] is scenario:
        return known[1]
    cached = _TEMPLATES.get(scenario)
    if cached is not None:
        _TEMPLATES.move_to_end(scenario)
        _remember(scenario, cached)
        return cached
    contents = {f.path: file_content(scenario.seed, f.path, f.bytes) for f in scenario.files}
    folders: set[str] = set(SCENARIO_ROOTS) | set(EXTRA_FOLDERS)
    for f in scenario.files:
        parent = posixpath.dirname(f.path)
        while parent != "/" and parent not in folders:
            folders.add(parent)
            parent = posixpath.dirname(parent)
    template = _Template(
        contents=contents,
        digests={p: digest(b) for p, b in contents.items()},
        folders=tuple(sorted(folders, key=lambda p: (p.count("/"), p))),
    )
    _TEMPLATES[scenario] = template
    if len(_TEMPLATES) > _TEMPLATE_CACHE_SIZE:
        _TEMPLATES.popitem(last=False)
    _remember(scenario, template)
    return template


def _remember(scenario: Scenario, template: _Template) -> None:
    # holding the object keeps its id from being reused while it is in the map
    if len(_BY_ID) >= _TEMPLATE_CACHE_SIZE:
        _BY_ID.clear()
    _BY_ID[id(scenario)] = (scenario, template)


def expected_digests(scenario: Scenario) -> dict[str, bytes]:
    """Each scenario file's content hash, as materialised."""
    return _template(scenario).digests


def expected_folders(scenario: Scenario) -> frozenset[str]:
    """Every folder a fresh copy holds (its roots and ``/dev/shm`` included)."""
    return frozenset(_template(scenario).folders)


def copy_bytes(scenario: Scenario) -> int:
    """What a copy's files take on a tmpfs: each file rounded up to whole pages."""
    return sum(-(-f.bytes // PAGE) * PAGE for f in scenario.files)


def copy_inodes(scenario: Scenario) -> int:
    """Inodes a copy takes: its files and folders, and the root folder itself."""
    return len(scenario.files) + len(_template(scenario).folders) + 1


def materialise(
    scenario: Scenario, root: Path | str, clock: float, *, owner: tuple[int, int] | None = None
) -> None:
    """Write a fresh copy of the scenario under ``root`` (``root/var/...``), mtimes from ``clock``.

    ``root`` is created if missing. ``owner`` (uid, gid) chowns what is written, for a
    sandbox that runs the program as another user. See ``materialise_at``.
    """
    os.makedirs(root, exist_ok=True)
    fd = os.open(root, os.O_RDONLY | os.O_DIRECTORY | os.O_CLOEXEC)
    try:
        materialise_at(scenario, fd, clock, owner=owner)
    finally:
        os.close(fd)


def materialise_at(
    scenario: Scenario, root_fd: int, clock: float, *, owner: tuple[int, int] | None = None
) -> None:
    """Write a fresh copy of the scenario into the folder ``root_fd`` names.

    Every root folder and ``/dev/shm`` is created, filled or not, so a sandbox can bind them
    all (folders already there are kept). Files get mode 0644 and the mtime ``age_days``
    before ``clock``; with ``owner``, files and folders are chowned to it.
    """
    template = _template(scenario)
    for folder in template.folders:
        relative = folder[1:]
        try:
            os.mkdir(relative, 0o755, dir_fd=root_fd)
        except FileExistsError:
            pass
        if owner is not None:
            os.chown(relative, *owner, dir_fd=root_fd)
    for f in scenario.files:
        fd = os.open(f.path[1:], _CREATE, FILE_MODE, dir_fd=root_fd)
        try:
            view = memoryview(template.contents[f.path])
            while view:
                view = view[os.write(fd, view) :]
            os.fchmod(fd, FILE_MODE)  # the umask may have taken bits away
            if owner is not None:
                os.fchown(fd, *owner)
            mtime = clock - f.age_days * _DAY_S
            os.utime(fd, (mtime, mtime))
        finally:
            os.close(fd)
