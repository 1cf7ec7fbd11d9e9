"""One config model per command; ``Field(description=...)`` is each setting's only help text.

Models are frozen and reject unknown keys, so a misspelt setting fails loudly.
They double as Prefect flow parameters, so ``prefect.yaml`` goes through the same
validation.
"""

from __future__ import annotations

import os
from typing import TYPE_CHECKING

from pydantic import BaseModel, ConfigDict, Field, PositiveInt

if TYPE_CHECKING:
    from tasks.runs import ReadLimits


class _Section(BaseModel):
    model_config = ConfigDict(frozen=True, extra="forbid")


class ReadSettings(_Section):
    """Bounds on what the reader accepts; anything over them is quarantined with a reason."""

    max_file_bytes: PositiveInt = Field(
        512 << 20,
        description="Largest run file read, in bytes; a larger file is quarantined (file_too_large).",
    )
    max_message_chars: PositiveInt = Field(
        4 << 20,
        description="Longest chat message kept, in characters; a run holding a longer one is "
        "quarantined (message_too_large).",
    )

    def limits(self) -> ReadLimits:
        """The reader's limits from these settings."""
        from tasks.runs import ReadLimits  # the reader imports polars; config must not

        return ReadLimits(
            max_file_bytes=self.max_file_bytes, max_message_chars=self.max_message_chars
        )


class IngestConfig(_Section):
    """Settings of `agir-retrain ingest`: read, score and pair run files."""

    inputs: list[str] = Field(
        default_factory=list,
        description="Run files, folders (searched recursively for *.json), globs, or fsspec "
        "URLs (file://, s3://, ...).",
    )
    out: str = Field("out", description="Output folder or fsspec URL; created if missing.")
    workers: PositiveInt = Field(
        default_factory=lambda: os.cpu_count() or 1,
        description="Processes reading shards in parallel; default one per CPU.",
    )
    shard_bytes: PositiveInt = Field(
        32 << 20,
        description="Target input bytes per shard (the unit of parallel work and of caching).",
    )
    read: ReadSettings = Field(default_factory=ReadSettings, description="Reader limits.")
