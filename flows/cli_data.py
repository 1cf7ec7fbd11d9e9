"""Commands that make data: ``synth``, ``ingest`` and ``dataset``."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated, Literal

import typer

from agir_retrain.flows.cli_app import console, printable
from agir_retrain.flows.cli_commands import Flag, SettingsCommand, flow_runner
from agir_retrain.flows.cli_output import print_build_report, print_report, progress
from agir_retrain.tasks.settings.build import BuildDatasetConfig, IngestConfig


def run_ingest(settings: IngestConfig) -> None:
    """Read, validate, score and pair run files with a progress bar; print the report."""
    _ingest_with_progress(settings)


INGEST = SettingsCommand(
    name="ingest",
    settings=IngestConfig,
    flags=(Flag(key="inputs", argument=True), Flag(key="out"), Flag(key="workers"), Flag(key="shard_bytes")),
    run=run_ingest,
    help="Read, validate, score and pair run files: runs, scored, pairs, quarantine, report.",
)  # fmt: skip

DATASET = SettingsCommand(
    name="dataset",
    settings=BuildDatasetConfig,
    flags=(
        Flag(key="inputs", argument=True), Flag(key="out"), Flag(key="base_model"),
        Flag(key="work_dir"), Flag(key="ray_address"),
    ),
    run=flow_runner(
        "agir_retrain.flows.build_dataset:build_dataset",
        task_runner=lambda settings: ray_runner(settings.ray_address, settings.ray_num_cpus),
    ),
    show=lambda _settings, result: print_build_report(result.report, result.out),
    help="Build the training files (pairs, completions, labelled completions): shards on Ray, "
    "garbling on a Ray actor pool, Prefect flow.",
)  # fmt: skip


def ray_runner(address: str | None, num_cpus: int | None):  # type: ignore[no-untyped-def]
    """Prefect's task runner on Ray (``flows/runtime.py``), imported only when a flow runs."""
    from agir_retrain.flows.runtime import ray_task_runner

    return ray_task_runner(address, num_cpus)


def synth(
    out: Annotated[Path, typer.Option(help="Folder for the corpus and its ground_truth.json.")],
    runs: Annotated[int, typer.Option(help="Copy strategy agents (runs) to write, in all.")] = 200,
    seed: Annotated[int, typer.Option(help="Random seed; the same seed gives the same bytes.")] = 0,
    env_kib: Annotated[
        int, typer.Option(help="Mean size of the pasted container listings, in KiB per file.")
    ] = 8,
    file_format: Annotated[
        Literal["v4", "v5", "mixed"],
        typer.Option(
            "--format",
            help="v4: v4 and 2024-12 run files; v5: one file per attempt record (chains, "
            "same-second overwrites, killed runs); mixed: half of each in one folder.",
        ),
    ] = "v4",
) -> None:
    """Write an upstream-shaped synthetic corpus covering every class and quirk, with ground truth."""
    from agir_retrain.tasks.synth.corpus import write_corpus
    from agir_retrain.tasks.synth.v5 import write_mixed_corpus, write_v5_corpus

    if file_format == "v5":
        truth = write_v5_corpus(out, runs=runs, seed=seed)
    elif file_format == "mixed":
        truth = write_mixed_corpus(out, runs=runs, seed=seed, env_kib=env_kib)
    else:
        truth = write_corpus(out, runs=runs, seed=seed, env_kib=env_kib)
    console.print(
        f"wrote {truth.files} files ({truth.runs} runs, {truth.bytes / 1e6:.1f} MB) to "
        f"{printable(str(out / 'runs'))}; ground truth in {printable(str(out / 'ground_truth.json'))}"
    )


def _ingest_with_progress(settings: IngestConfig) -> None:
    from agir_retrain.tasks.runs.fields import ReadLimits
    from agir_retrain.tasks.runs.ingest import ingest as run_ingest

    bar = progress()
    task = bar.add_task("ingest", total=None)

    def on_plan(shards: list) -> None:
        # Started only now: the worker pool forks before this display starts its thread.
        bar.update(task, total=sum(s.size_bytes for s in shards))
        bar.start()

    try:
        report = run_ingest(
            settings.inputs,
            settings.out,
            limits=ReadLimits.from_settings(settings.read),
            shard_bytes=settings.shard_bytes,
            workers=settings.workers,
            on_plan=on_plan,
            on_shard_done=lambda shard: bar.advance(task, shard.size_bytes),
        )
    finally:
        bar.stop()
    print_report(report, settings.out)


COMMANDS = (INGEST, DATASET, synth)
