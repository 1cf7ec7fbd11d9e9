"""The v4 and 2024-12 formats: one JSON document per agent run, one run per copy agent.

Recognised by their top-level keys. The agent's ``collect`` writes v4 too, so its runs
come through here with no special case. ``agents.py`` reads both layouts, ``history.py``
a copy agent's tagged chat, ``legacy.py`` what only 2024-12 needs.
"""

from __future__ import annotations

from typing import Any

from agir_retrain.tasks.run_ids import content_digest
from agir_retrain.tasks.runs.fields import ReadLimits, RunFileResult
from agir_retrain.tasks.runs.formats.base import RunFormat
from agir_retrain.tasks.runs.formats.v4.agents import LEGACY_2024_12, V4, read_agents_document


class V4Format(RunFormat):
    """v4 files: a main strategy agent and its copies (``copy_strat_agents``)."""

    name = V4

    def detect(self, document: dict[str, Any]) -> bool:
        """Either of v4's agent keys at the top (a file may lack the other)."""
        return "copy_strat_agents" in document or "main_strat_agent" in document

    def read(
        self, source: str, data: bytes, document: dict[str, Any], limits: ReadLimits
    ) -> RunFileResult:
        """One run per copy agent, named by the file's stem and content (``run_ids``)."""
        return read_agents_document(
            source, len(data), document, self.name, limits, content_digest(data)
        )


class Legacy2024Format(V4Format):
    """2024-12 files: v4's layout with other key and tag names (``strat_agents``)."""

    name = LEGACY_2024_12

    def detect(self, document: dict[str, Any]) -> bool:
        """``strat_agents`` at the top (checked after v4, whose keys win)."""
        return "strat_agents" in document
