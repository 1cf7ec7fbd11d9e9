"""``agir-retrain collect``: a model plays the agent's loop in the sandbox and writes v4 runs.

agir-retrain collect --generated 64 --strategies given --runs-per-task 4 --out gen0
agir-retrain collect --scenario heavy-mix --base-model model.gguf --adapter gen1 --out gen1
"""

from __future__ import annotations

from agir_retrain.flows.cli_commands import Flag, SettingsCommand, flow_runner
from agir_retrain.tasks.settings.collect import CollectConfig


def check_tasks(settings: CollectConfig) -> None:
    """Load every scenario now: a bad name or file fails before any server starts."""
    from agir_retrain.tasks.agent.collect import collect_tasks

    collect_tasks(settings)


def print_collect(result) -> None:  # type: ignore[no-untyped-def]
    """Print the collection's report (the rows of its artifact)."""
    from agir_retrain.flows.cli_output import print_rows

    print_rows(result.report.rows(), title=f"collect -> {result.runs}", value_header="count")


COLLECT = SettingsCommand(
    name="collect",
    settings=CollectConfig,
    flags=(
        Flag(key="scenarios", name="scenario", repeat=True), Flag(key="generated"),
        Flag(key="first_seed"), Flag(key="strategies"), Flag(key="policy"),
        Flag(key="runs_per_task"), Flag(key="base_model"), Flag(key="adapter"),
        Flag(key="prompts"), Flag(key="out"), Flag(key="seed"),
    ),
    check=check_tasks,
    run=flow_runner("agir_retrain.flows.collect:collect_flow"),
    show=lambda _settings, result: print_collect(result),
    help="Play the agent's loop with a model on scenarios; write AGIR v4 run files.",
)  # fmt: skip

COMMANDS = (COLLECT,)
