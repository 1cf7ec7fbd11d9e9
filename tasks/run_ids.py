"""Run ids: what names a run, the same on every machine, and never two runs at once."""

from __future__ import annotations

import xxhash

# A run id names the file's content as well as its name: files are named by the second, so a
# corpus gathered from many machines holds the same name twice. XXH3-128 is a fixed,
# portable function (the same digest on every machine) and hashes at memory speed, where
# sha256 cost a third of the reader's time; ten hex digits (40 bits) only need to tell
# apart files that share a name, and assembly fails loudly if two runs ever share an id.
RUN_ID_DIGEST_CHARS = 10


def content_digest(data: bytes) -> str:
    """The content part of a run id: the first hex digits of the file bytes' XXH3-128."""
    return xxhash.xxh3_128_hexdigest(data)[:RUN_ID_DIGEST_CHARS]


def make_run_id(stem: str, index: int, digest: str) -> str:
    """Name run ``index`` of a file: ``<file stem>#<index>@<content digest>``."""
    return f"{stem}#{index}@{digest}"
