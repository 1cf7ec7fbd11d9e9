"""What only 2024-12 run files need: a figure per run from the file's total."""

from __future__ import annotations

from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from agir_retrain.tasks.runs.formats.v4.agents import ParsedAgent


def attribute_legacy_total(agents: list[ParsedAgent], file_total: float | None) -> None:
    """Give 2024-12 runs a figure from the file total where that is exact.

    Those files record only the sum over copies, and only copies whose code ran in
    the real container add to it (the others add 0). So runs that never ran code get
    0, and when exactly one run ran code the whole total is its own. When several
    did, their shares are unknown (``None``), which ``classify_run`` reports.
    """
    ran = [agent for agent in agents if any(a.outcome.ran for a in agent.attempts)]
    for agent in agents:
        if agent not in ran:
            agent.space_freed_raw = 0.0
        elif len(ran) == 1:
            agent.space_freed_raw = file_total
        else:
            agent.space_freed_raw = None
