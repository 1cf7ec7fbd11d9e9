"""What a program did to its scenario copy: junk freed, bytes left behind, protected damage.

The copy is walked after every process of the episode is gone, without following a single
symbolic link (a program can plant one pointing anywhere on the host), and only regular
files are opened, with O_NOFOLLOW.
"""

from __future__ import annotations

import hashlib
import os
import stat
from dataclasses import dataclass
from pathlib import Path

from agir_retrain.tasks.environment.contract import FileKind, Scenario
from agir_retrain.tasks.environment.scenario import expected_digests, junk_bytes_total


@dataclass(frozen=True, slots=True, kw_only=True)
class Measurement:
    """The scenario copy's state after the program, against what was materialised."""

    junk_bytes_total: int
    junk_bytes_freed: int  # deleted junk plus bytes cut from truncated junk
    new_bytes: int  # bytes of files that were not in the scenario and are there now
    protected_damaged: tuple[str, ...]  # deleted or changed (size, type or hash), sorted

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


def snapshot(root: Path) -> dict[str, os.stat_result]:
    """Every entry below ``root`` (as its path inside the sandbox) and its lstat."""
    base = os.fspath(root)
    found: dict[str, os.stat_result] = {}
    stack = [base]
    while stack:  # iterative: a program may nest folders deeper than Python recurses
        folder = stack.pop()
        try:
            entries = list(os.scandir(folder))
        except OSError:  # vanished, a name too long to reach: nothing countable there
            continue
        for entry in entries:
            try:
                info = entry.stat(follow_symlinks=False)
            except OSError:
                continue
            if stat.S_ISDIR(info.st_mode):
                stack.append(entry.path)
            else:
                found[entry.path[len(base) :]] = info
    return found


def _hash_regular_file(path: str) -> bytes | None:
    try:
        fd = os.open(path, os.O_RDONLY | os.O_NOFOLLOW | os.O_CLOEXEC | os.O_NONBLOCK)
    except OSError:
        return None
    try:
        if not stat.S_ISREG(os.fstat(fd).st_mode):
            return None
        digest = hashlib.blake2b(digest_size=16)
        while chunk := os.read(fd, 1 << 20):
            digest.update(chunk)
        return digest.digest()
    finally:
        os.close(fd)


def measure(scenario: Scenario, root: Path) -> Measurement:
    """Compare the copy under ``root`` with the scenario as it was materialised."""
    after = snapshot(root)
    digests = expected_digests(scenario)
    base = os.fspath(root)
    freed = 0
    damaged: list[str] = []
    for f in scenario.files:
        info = after.pop(f.path, None)
        regular = info is not None and stat.S_ISREG(info.st_mode)
        if f.kind is FileKind.JUNK:
            if not regular:
                freed += f.bytes
                if info is not None:  # something else in its place is left behind
                    after[f.path] = info
            else:
                freed += max(0, f.bytes - info.st_size)
        elif (
            not regular
            or info.st_size != f.bytes
            or _hash_regular_file(base + f.path) != digests[f.path]
        ):
            damaged.append(f.path)
            if info is not None and not regular:
                after[f.path] = info
    new = sum(info.st_size for info in after.values())
    return Measurement(
        junk_bytes_total=junk_bytes_total(scenario),
        junk_bytes_freed=freed,
        new_bytes=new,
        protected_damaged=tuple(sorted(damaged)),
    )
