"""The collect flow: a model plays the agent's loop in the sandbox and writes AGIR v4 runs.

    agir-retrain collect --generated 64 --strategies given --base-model builtin:tiny --out gen0

1. tasks: scenarios (profiles, files, or generated ``gen-<seed>``), ``runs_per_task`` runs
   each; runs whose file already exists are skipped (a resumed collection);
2. waves: every unfinished run's next prompt is sampled at once on a Ray actor pool that
   holds the model for the whole collection; the programs that came back run in the
   sandbox, each on the scenario state its run's earlier attempts left;
3. each finished run is written as ``runs/<task>/full_agent_data_*.json`` (the agent's v4);
4. ``collect_report.json`` and a table artifact: runs by class, attempts by outcome, freed.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

from prefect import flow, get_run_logger
from prefect.artifacts import create_table_artifact

from agir_retrain.tasks.agent.collect import collect, collect_tasks, plan_runs, sampler_spec
from agir_retrain.tasks.agent.episodes import LocalEpisodes
from agir_retrain.tasks.agent.reference import reference_policy
from agir_retrain.tasks.agent.report import CollectReport
from agir_retrain.tasks.evaluation.sampling import SampleRequest, plan_sample_batches
from agir_retrain.tasks.io import join, write_json_atomic
from agir_retrain.tasks.prefect_tasks import StageProgress
from agir_retrain.tasks.settings.collect import CollectConfig

REPORT_FILE = "collect_report.json"


@dataclass(frozen=True, slots=True)
class CollectResult:
    """Where the runs are, and what was made."""

    out: str
    runs: str
    report: CollectReport


@flow(name="collect")
def collect_flow(config: CollectConfig) -> CollectResult:
    """Play the agent's loop with a model on scenario tasks and write the runs."""
    from agir_retrain.tasks.ray_pool import SamplerPool, ray_session

    logger = get_run_logger()
    tasks = collect_tasks(config)
    todo, written = plan_runs(tasks, config)
    logger.info("%d tasks: %d runs to play, %d already written", len(tasks), len(todo), written)
    with (
        StageProgress("runs", len(todo), "collect-runs", "runs") as bar,
        LocalEpisodes(config.environment, config.workers) as episodes,
    ):
        if config.policy == "reference":
            report = collect(
                config,
                sample=reference_policy,
                run_episodes=episodes,
                on_run_done=lambda _: bar.advance(1),
            )
        else:
            with (
                ray_session(config.ray_address, config.ray_num_cpus),
                SamplerPool(sampler_spec(config), config.sampling.actors) as pool,
            ):

                def sample(requests: Sequence[SampleRequest]) -> dict[str, str]:
                    batches = plan_sample_batches(requests, config.sampling.batch_size)
                    return {c.task_id: c.completion for c in pool.sample(batches)}

                report = collect(
                    config,
                    sample=sample,
                    run_episodes=episodes,
                    on_run_done=lambda _: bar.advance(1),
                )
    write_json_atomic(join(config.out, REPORT_FILE), report.to_dict())
    create_table_artifact(
        key="collect-report",
        table=[{"what": what, "count": count} for what, count in report.rows()],
        description="Collect: runs by class, attempts by outcome, space freed",
    )
    return CollectResult(out=config.out, runs=join(config.out, "runs"), report=report)
