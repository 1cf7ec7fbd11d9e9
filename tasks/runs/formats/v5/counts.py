"""v5's own counts in the ingest report: records read by type, lost attempts, unlinked prompts."""

from __future__ import annotations

from collections import Counter
from dataclasses import dataclass, field
from typing import Any

from agir_retrain.tasks.runs.fields import RunFileResult


@dataclass(slots=True)
class V5Counts:
    """Records read by type; attempt numbers lost (in total, and chains by how many they
    lost); chains whose strategy_list or getter records are not in the corpus.

    Its report keys follow the shared ones, in this order (``report.json`` keeps them).
    """

    records: Counter[str] = field(default_factory=Counter)
    attempts_missing: int = 0
    chains_by_attempts_missing: Counter[str] = field(default_factory=Counter)
    strategy_prompt_missing: int = 0  # chains whose strategy_list record is not in the corpus
    env_getter_prompt_missing: int = 0  # chains none of whose getter records is in the corpus

    def add_file(self, result: RunFileResult) -> None:
        """Count a v5 file's record by its type."""
        for record in result.pending:
            self.records[record.record_type.value] += 1

    def merge(self, other: V5Counts) -> None:
        """Add another shard's (or the chain step's) counts."""
        self.records.update(other.records)
        self.attempts_missing += other.attempts_missing
        self.chains_by_attempts_missing.update(other.chains_by_attempts_missing)
        self.strategy_prompt_missing += other.strategy_prompt_missing
        self.env_getter_prompt_missing += other.env_getter_prompt_missing

    def to_dict(self) -> dict[str, Any]:
        """The report entries, keys in a stable order."""
        return {
            "v5_records": dict(sorted(self.records.items())),
            "attempts_missing": self.attempts_missing,
            "chains_by_attempts_missing": dict(
                sorted(self.chains_by_attempts_missing.items(), key=lambda kv: int(kv[0]))
            ),
            "v5_strategy_prompt_missing": self.strategy_prompt_missing,
            "v5_env_getter_prompt_missing": self.env_getter_prompt_missing,
        }

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> V5Counts:
        """Read the entries back from a report's dict."""
        return cls(
            records=Counter(data.get("v5_records", {})),
            attempts_missing=int(data.get("attempts_missing", 0)),
            chains_by_attempts_missing=Counter(data.get("chains_by_attempts_missing", {})),
            strategy_prompt_missing=int(data.get("v5_strategy_prompt_missing", 0)),
            env_getter_prompt_missing=int(data.get("v5_env_getter_prompt_missing", 0)),
        )
