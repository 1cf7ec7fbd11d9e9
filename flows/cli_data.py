"""Commands that make data: ``synth``, ``ingest`` and ``dataset``."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated, Literal

import typer

from agir_retrain.flows.cli_app import (
    ConfigOption,
    SetOption,
    app,
    console,
    friendly_errors,
    overrides,
    printable,
)
from agir_retrain.flows.cli_output import print_build_report, print_report, progress
from agir_retrain.tasks.settings.loader import field_description as describe
from agir_retrain.tasks.settings.loader import load_config
from agir_retrain.tasks.settings.models import BuildDatasetConfig, IngestConfig


@app.command()
@friendly_errors
def ingest(
    inputs: Annotated[list[str], typer.Argument(help=describe(IngestConfig, "inputs"))],
    out: Annotated[str | None, typer.Option(help=describe(IngestConfig, "out"))] = None,
    workers: Annotated[int | None, typer.Option(help=describe(IngestConfig, "workers"))] = None,
    shard_bytes: Annotated[
        int | None, typer.Option(help=describe(IngestConfig, "shard_bytes"))
    ] = None,
    config: ConfigOption = None,
    set_: SetOption = None,
) -> None:
    """Read, validate, score and pair run files: runs, scored, pairs, quarantine, report."""
    loaded = load_config(
        IngestConfig,
        config,
        overrides(set_, inputs=inputs or None, out=out, workers=workers, shard_bytes=shard_bytes),
    )
    settings = loaded.config
    _ingest_with_progress(settings)


@app.command()
@friendly_errors
def dataset(
    inputs: Annotated[list[str], typer.Argument(help=describe(BuildDatasetConfig, "inputs"))],
    out: Annotated[str | None, typer.Option(help=describe(BuildDatasetConfig, "out"))] = None,
    base_model: Annotated[
        str | None, typer.Option(help=describe(BuildDatasetConfig, "base_model"))
    ] = None,
    work_dir: Annotated[
        str | None, typer.Option(help=describe(BuildDatasetConfig, "work_dir"))
    ] = None,
    ray_address: Annotated[
        str | None, typer.Option(help=describe(BuildDatasetConfig, "ray_address"))
    ] = None,
    config: ConfigOption = None,
    set_: SetOption = None,
) -> None:
    """Build DPO and KTO data: shards on Ray, garbling on a Ray actor pool, Prefect flow."""
    loaded = load_config(
        BuildDatasetConfig,
        config,
        overrides(
            set_,
            inputs=inputs or None,
            out=out,
            base_model=base_model,
            work_dir=work_dir,
            ray_address=ray_address,
        ),
    )
    result = run_build_dataset(loaded.config)
    print_build_report(result.report, result.out)


def run_build_dataset(settings: BuildDatasetConfig):
    """Run the build-dataset flow on the configured (or a local) Prefect API and Ray."""
    from agir_retrain.flows.runtime import prefect_api, ray_task_runner

    with prefect_api():
        from agir_retrain.flows.build_dataset import build_dataset

        runner = ray_task_runner(settings.ray_address, settings.ray_num_cpus)
        return build_dataset.with_options(task_runner=runner)(settings)


@app.command()
@friendly_errors
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
