"""Cut a corpus into shards: units of work that are recomputed only when their files change."""

from __future__ import annotations

import hashlib
import os
from collections.abc import Sequence
from dataclasses import dataclass

from agir_retrain.tasks.inputs import InputFile

_HASH_SPACE = float(1 << 64)


@dataclass(frozen=True, slots=True, kw_only=True)
class Shard:
    """A run of consecutive input files (in sorted order), processed as one unit."""

    index: int
    files: tuple[InputFile, ...]

    @property
    def size_bytes(self) -> int:
        """The shard's input size."""
        return sum(f.size_bytes for f in self.files)


def _name_hash(location: str) -> float:
    """A number in [0, 1) drawn from a file's base name alone."""
    digest = hashlib.blake2b(os.path.basename(location).encode(), digest_size=8).digest()
    return int.from_bytes(digest, "big") / _HASH_SPACE


def plan_shards(files: Sequence[InputFile], target_bytes: int) -> list[Shard]:
    """Group sorted files into shards of about ``target_bytes``, with stable boundaries.

    A shard ends after a file with probability ``size / target_bytes``, decided by a
    hash of the file's name (content-defined chunking at file granularity), once the
    shard holds ``target_bytes / 4``; it always ends at ``2 * target_bytes``. Where a
    boundary falls does not depend on the rest of the corpus, so adding files
    (AGIR names them by timestamp) changes only the shards they fall in, and the
    rest are reused from cache.
    """
    if target_bytes <= 0:
        raise ValueError(f"target_bytes must be positive, got {target_bytes}")
    shards: list[Shard] = []
    current: list[InputFile] = []
    current_bytes = 0
    for file in files:
        current.append(file)
        current_bytes += file.size_bytes
        at_boundary = _name_hash(file.location) < file.size_bytes / target_bytes
        if current_bytes >= 2 * target_bytes or (
            at_boundary and current_bytes >= target_bytes // 4
        ):
            shards.append(Shard(index=len(shards), files=tuple(current)))
            current, current_bytes = [], 0
    if current:
        shards.append(Shard(index=len(shards), files=tuple(current)))
    return shards
