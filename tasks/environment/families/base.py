"""What a scenario family writes into: a seeded set of files with unique paths."""

from __future__ import annotations

import random
from collections.abc import Callable
from dataclasses import dataclass

from agir_retrain.tasks.environment.contract import FileKind, ScenarioFile

KiB = 1024
MiB = 1024 * KiB
JUNK, PROTECTED = FileKind.JUNK, FileKind.PROTECTED

USERS = ("agent", "dev", "maria", "kenji", "ops", "lee", "sam", "ana")
APPS = ("nginx", "billing", "worker", "api", "cron", "mailer", "ingest", "search", "auth")


class FileSet:
    """The files a generated scenario collects; a path taken twice keeps its first file."""

    def __init__(self) -> None:
        self.files: dict[str, ScenarioFile] = {}

    def add(self, path: str, size: int, kind: FileKind, age_days: float = 0.0) -> None:
        """Add one file (ignored when its path, or a folder of it, is already taken)."""
        if path in self.files or self._clashes(path):
            return
        self.files[path] = ScenarioFile(
            path=path, bytes=int(size), kind=kind, age_days=round(max(0.0, age_days), 2)
        )

    def _clashes(self, path: str) -> bool:
        """Whether ``path`` would be a file inside another file, or a folder of one."""
        prefix = path + "/"
        parent = path.rsplit("/", 1)[0]
        while parent:
            if parent in self.files:
                return True
            parent = parent.rsplit("/", 1)[0]
        return any(other.startswith(prefix) for other in self.files)

    def junk(self, kinds: FileKind = JUNK) -> int:
        """Bytes of junk added so far."""
        return sum(f.bytes for f in self.files.values() if f.kind is kinds)


@dataclass(frozen=True, slots=True, kw_only=True)
class Rule:
    """Which files a strategy means: below ``folder``, names with one of ``suffixes`` (any when
    empty) and ``prefix``, modified more than ``older_than_days`` ago (any age when None).

    A rule selects exactly its family's junk in any scenario the family is part of (tested),
    so following the strategy to the letter frees that junk and damages nothing.
    """

    folder: str
    suffixes: tuple[str, ...] = ()
    prefix: str = ""
    older_than_days: float | None = None


@dataclass(frozen=True, slots=True, kw_only=True)
class Strategy:
    """A strategy in the agent's words, and the rule it states."""

    text: str
    rule: Rule


Family = Callable[[FileSet, random.Random], list[Strategy]]
"""Writes one family's files into the set and returns its strategies."""


def hexname(rng: random.Random, length: int) -> str:
    """A hash-like name, as caches use."""
    return f"{rng.getrandbits(4 * length):0{length}x}"


def size(rng: random.Random, low_kib: int, high_kib: int) -> int:
    """A file size in bytes, from a range in KiB."""
    return rng.randint(low_kib, high_kib) * KiB
