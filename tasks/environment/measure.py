"""What a program did to its scenario copy: junk freed, bytes left behind, protected damage.

The measurement fails closed: whatever it cannot see is never "nothing there". It runs
after every process of the episode is gone, so the tree holds still, and it walks the copy
through descriptors, one folder at a time (``openat`` of a name, ``..`` to come back, each
checked to be the folder it was): no path is ever formed, so no name chain is too long to
reach. Nothing is followed: links are counted as links, and only regular files and folders
are opened (``O_NOFOLLOW``). A folder the program shut (mode 0, 0444) is given its owner's
rwx back first. Bytes count by allocation, ``max(st_size, st_blocks * 512)``, so a size of
zero in front of allocated blocks hides nothing; every new entry also counts its name's
bytes, and every extended attribute its name and value, so no byte of junk can be carried
in names, link targets or attributes. Where the copy is a filesystem of its own (the
sandboxes' episode filesystem), what that filesystem says it holds must match what the walk
found; anything short of that, or anything the walk could not open, makes the copy
unmeasurable (the episode's ``stopped_by``), never freed.
"""

from __future__ import annotations

import errno
import hashlib
import os
import stat
from collections.abc import Iterable
from dataclasses import dataclass, field
from pathlib import Path

from agir_retrain.tasks.environment.contract import FileKind, Scenario
from agir_retrain.tasks.environment.copies import FILE_MODE, expected_digests, expected_folders
from agir_retrain.tasks.environment.scenario import junk_bytes_total

MAX_ENTRIES = 2_000_000  # a walk past this many entries stops: the copy is unmeasurable
_DIR_FLAGS = os.O_RDONLY | os.O_DIRECTORY | os.O_NOFOLLOW | os.O_CLOEXEC
_FILE_FLAGS = os.O_RDONLY | os.O_NOFOLLOW | os.O_NONBLOCK | os.O_CLOEXEC
_OWNER_RWX = stat.S_IRWXU


@dataclass(frozen=True, slots=True, kw_only=True)
class Measurement:
    """The scenario copy's state after the program, against what was materialised."""

    junk_bytes_total: int
    junk_bytes_freed: int  # deleted junk plus allocation cut from truncated junk
    new_bytes: int  # allocation, names and attributes of what the program left behind
    protected_damaged: tuple[str, ...]  # deleted or changed (content, size, type, mode, owner)
    unmeasurable: tuple[str, ...] = ()  # why part of the copy could not be measured
    junk_left: tuple[tuple[str, int], ...] = ()  # junk still a regular file: (path, size)

    @property
    def freed_share(self) -> float:
        """``max(0, freed - new) / total`` (0 for a scenario without junk)."""
        return freed_share(self.junk_bytes_freed, self.new_bytes, self.junk_bytes_total)


def freed_share(freed: int, new: int, total: int) -> float:
    """The contract's share of junk freed, net of what was left behind."""
    return max(0, freed - new) / total if total > 0 else 0.0


def is_success(exit_code: int | None, share: float, damaged: tuple[str, ...]) -> bool:
    """The contract's success: the program exited 0, freed something and damaged nothing."""
    return exit_code == 0 and share > 0 and not damaged


def allocation(info: os.stat_result) -> int:
    """Bytes an entry takes: its size, or its allocated blocks where those are more."""
    return max(info.st_size, info.st_blocks * 512)


@dataclass(slots=True)
class _Walk:
    """Every entry below the root (by its path inside the sandbox), and what the walk met."""

    entries: dict[str, os.stat_result] = field(default_factory=dict)
    hashes: dict[str, bytes | None] = field(default_factory=dict)  # protected path -> content
    attribute_bytes: int = 0
    problems: list[str] = field(default_factory=list)


def measure(
    scenario: Scenario, root: Path | str, *, owner: tuple[int, int] | None = None
) -> Measurement:
    """Compare the copy under the folder ``root`` with the scenario as it was materialised.

    ``owner``: who the files were given to (``materialise``'s owner; default this process).
    """
    fd = os.open(root, _DIR_FLAGS)
    try:
        return measure_at(scenario, fd, owner=owner)
    finally:
        os.close(fd)


def measure_at(
    scenario: Scenario,
    root_fd: int,
    *,
    owner: tuple[int, int] | None = None,
    whole_filesystem: bool = False,
) -> Measurement:
    """Compare the copy in the folder ``root_fd`` names with the scenario as materialised.

    ``whole_filesystem``: the folder is the root of a filesystem holding nothing but the copy
    (the episode's own), so its used blocks must all be reachable by the walk.
    """
    owner = owner if owner is not None else (os.geteuid(), os.getegid())
    protected = {f.path for f in scenario.files if f.kind is FileKind.PROTECTED}
    walk = _walk(root_fd, protected)
    digests = expected_digests(scenario)
    after = dict(walk.entries)
    freed = 0
    damaged: list[str] = []
    junk_left: list[tuple[str, int]] = []
    for f in scenario.files:
        info = after.pop(f.path, None)
        regular = info is not None and stat.S_ISREG(info.st_mode)
        if f.kind is FileKind.JUNK:
            if regular:
                freed += max(0, f.bytes - allocation(info))
                junk_left.append((f.path, info.st_size))
            else:
                freed += f.bytes
                if info is not None:  # something else in its place is left behind
                    after[f.path] = info
            continue
        if (
            info is None
            or not regular
            or info.st_size != f.bytes
            or stat.S_IMODE(info.st_mode) != FILE_MODE
            or (info.st_uid, info.st_gid) != owner
            or walk.hashes.get(f.path) != digests[f.path]
        ):
            damaged.append(f.path)
            if info is not None and not regular:
                after[f.path] = info
    folders = expected_folders(scenario)
    new = walk.attribute_bytes
    for path, info in after.items():
        if path in folders and stat.S_ISDIR(info.st_mode):
            continue
        name = path.rsplit("/", 1)[1]
        new += allocation(info) + len(name.encode("utf-8", "surrogateescape"))
    problems = list(walk.problems)
    if whole_filesystem and not problems:
        problems += _unreached_blocks(root_fd, walk.entries.values())
    return Measurement(
        junk_bytes_total=junk_bytes_total(scenario),
        junk_bytes_freed=freed,
        new_bytes=new,
        protected_damaged=tuple(sorted(damaged)),
        unmeasurable=tuple(problems),
        junk_left=tuple(junk_left),
    )


def _walk(root_fd: int, protected: set[str]) -> _Walk:
    """Walk the tree below ``root_fd``, holding one folder descriptor at a time."""
    walk = _Walk()
    root_info = os.fstat(root_fd)
    walk.attribute_bytes += _attribute_bytes(root_fd, None, walk, "/")
    current = os.dup(root_fd)
    # each level: its path, its (dev, ino), the subfolders still to visit
    stack: list[tuple[str, tuple[int, int], list[str]]] = []
    try:
        stack.append(
            ("", (root_info.st_dev, root_info.st_ino), _visit(current, "", walk, protected))
        )
        while stack and not walk.problems:
            path, _identity, pending = stack[-1]
            if pending:
                name = pending.pop()
                child = _enter(current, f"{path}/{name}", name, walk)
                if child is None:
                    break
                os.close(current)
                current = child
                child_path = f"{path}/{name}"
                info = walk.entries[child_path]
                stack.append(
                    (
                        child_path,
                        (info.st_dev, info.st_ino),
                        _visit(current, child_path, walk, protected),
                    )
                )
                if len(walk.entries) > MAX_ENTRIES:
                    walk.problems.append(f"more than {MAX_ENTRIES} entries")
                continue
            stack.pop()
            if not stack:
                break
            parent = os.open("..", _DIR_FLAGS, dir_fd=current)
            seen = os.fstat(parent)
            os.close(current)
            current = parent
            if (seen.st_dev, seen.st_ino) != stack[-1][1]:
                walk.problems.append(f"{stack[-1][0] or '/'}: moved while it was measured")
    except OSError as exc:
        walk.problems.append(f"walk failed: {exc}")
    finally:
        os.close(current)
    if root_info.st_dev and any(i.st_dev != root_info.st_dev for i in walk.entries.values()):
        walk.problems.append("an entry lies on another filesystem than the copy")
    return walk


def _enter(parent: int, path: str, name: str, walk: _Walk) -> int | None:
    """Open the subfolder ``name`` (giving its owner rwx back first); None if it cannot be."""
    info = walk.entries[path]
    try:
        if info.st_mode & _OWNER_RWX != _OWNER_RWX:
            # safe to follow: lstat said folder, and no process is left to swap it for a link
            os.chmod(name, stat.S_IMODE(info.st_mode) | _OWNER_RWX, dir_fd=parent)
        child = os.open(name, _DIR_FLAGS, dir_fd=parent)
    except OSError as exc:
        walk.problems.append(f"{path}: cannot be opened ({exc.strerror})")
        return None
    opened = os.fstat(child)
    if (opened.st_dev, opened.st_ino) != (info.st_dev, info.st_ino):
        os.close(child)
        walk.problems.append(f"{path}: changed while it was measured")
        return None
    return child


def _visit(folder: int, path: str, walk: _Walk, protected: set[str]) -> list[str]:
    """Record the entries of an open folder; return its subfolders' names."""
    subfolders = []
    with os.scandir(folder) as listing:
        for entry in listing:
            entry_path = f"{path}/{entry.name}"
            info = entry.stat(follow_symlinks=False)
            walk.entries[entry_path] = info
            if stat.S_ISDIR(info.st_mode):
                subfolders.append(entry.name)
                walk.attribute_bytes += _attribute_bytes(folder, entry.name, walk, entry_path)
            elif stat.S_ISREG(info.st_mode):
                walk.attribute_bytes += _attribute_bytes(folder, entry.name, walk, entry_path)
                if entry_path in protected:
                    walk.hashes[entry_path] = _hash(folder, entry.name, walk, entry_path)
    return subfolders


def _attribute_bytes(folder: int, name: str | None, walk: _Walk, path: str) -> int:
    """Bytes of the extended attributes (names and values) of ``name`` in ``folder``.

    Only regular files and folders can hold user attributes; they are reached through
    ``/proc/self/fd`` so no path longer than one name is ever formed.
    """
    target: int | str = folder if name is None else f"/proc/self/fd/{folder}/{name}"
    follow = name is None  # a descriptor is the file itself; a name must not be followed
    try:
        names = os.listxattr(target, follow_symlinks=follow)
        return sum(
            len(n.encode()) + len(os.getxattr(target, n, follow_symlinks=follow)) for n in names
        )
    except OSError as exc:
        if exc.errno in (errno.ENOTSUP, errno.ENODATA):
            return 0
        walk.problems.append(f"{path}: extended attributes unreadable ({exc.strerror})")
        return 0


def _hash(folder: int, name: str, walk: _Walk, path: str) -> bytes | None:
    """The content hash of a regular file, or None where it cannot be read."""
    try:
        fd = os.open(name, _FILE_FLAGS, dir_fd=folder)
    except OSError:
        return None  # a file shut to its reader: damaged (its mode changed) or unmeasurable
    try:
        digest = hashlib.blake2b(digest_size=16)
        while chunk := os.read(fd, 1 << 20):
            digest.update(chunk)
        return digest.digest()
    except OSError as exc:
        walk.problems.append(f"{path}: unreadable ({exc.strerror})")
        return None
    finally:
        os.close(fd)


def _unreached_blocks(root_fd: int, entries: Iterable[os.stat_result]) -> list[str]:
    """The filesystem's used blocks against the blocks of every inode the walk reached."""
    fs = os.fstatvfs(root_fd)
    used = (fs.f_blocks - fs.f_bfree) * fs.f_frsize
    seen: dict[int, int] = {}
    for info in entries:
        seen[info.st_ino] = info.st_blocks * 512
    reached = sum(seen.values()) + os.fstat(root_fd).st_blocks * 512
    if used > reached:
        return [f"the filesystem holds {used - reached} bytes that no name reaches"]
    return []
