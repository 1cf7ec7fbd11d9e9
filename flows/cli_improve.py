"""``agir-retrain improve``: generations of collect -> dataset -> train -> evaluate.

agir-retrain improve --base-model builtin:smollm2-135m --generations 2 --start reference
"""

from __future__ import annotations

from agir_retrain.flows.cli_commands import Flag, SettingsCommand, flow_runner
from agir_retrain.tasks.settings.improve import ImproveConfig


def print_improve(result) -> None:  # type: ignore[no-untyped-def]
    """Print the generations' two tables (the cells of improve.md and the artifact)."""
    from agir_retrain.flows.cli_output import print_cells
    from agir_retrain.tasks.improve.report import table_cells

    facts, yardstick = table_cells(result.report)
    print_cells(facts, title=f"improve -> {result.out}")
    print_cells(yardstick, title="held-out tasks (intervals below each figure)", split=True)
    if result.report.stopped_early:
        print(f"stopped early: {result.report.stopped_early}")  # noqa: T201 (the command's output)


IMPROVE = SettingsCommand(
    name="improve",
    settings=ImproveConfig,
    flags=(
        Flag(key="base_model"), Flag(key="generations"), Flag(key="start"),
        Flag(key="train.objective", name="objective"), Flag(key="scenarios"),
        Flag(key="window"), Flag(key="out"),
    ),
    run=flow_runner("agir_retrain.flows.improve:improve"),
    show=lambda _settings, result: print_improve(result),
    help="Improve the agent over generations: collect, build a dataset, train, evaluate.",
)  # fmt: skip

COMMANDS = (IMPROVE,)
