"""The ``agir-retrain`` command line.

    agir-retrain synth --runs 200 --out corpus --seed 0
    agir-retrain ingest corpus --out out

Every setting can also come from ``--config FILE.yaml``, ``AGIR_*`` environment
variables, or ``--set key=value``; flags win over the environment, which wins over
the file. ``agir-retrain config show COMMAND`` prints the effective settings.
"""

from __future__ import annotations

import functools
import json
import logging
from collections.abc import Callable
from pathlib import Path
from typing import Annotated, Any, TypeVar

import typer
from rich.console import Console
from rich.logging import RichHandler
from rich.progress import (
    BarColumn,
    DownloadColumn,
    Progress,
    TimeRemainingColumn,
    TransferSpeedColumn,
)
from rich.table import Table

from tasks.config import field_description, load_config
from tasks.errors import AgirError
from tasks.settings import BuildDatasetConfig, IngestConfig, TrainConfig

app = typer.Typer(
    help="Turn AGIR agent runs into DPO preference data and train a QLoRA DPO adapter on it.",
    no_args_is_help=True,
    pretty_exceptions_enable=False,
)
console = Console(stderr=True)

ConfigOption = Annotated[
    Path | None,
    typer.Option("--config", help="YAML file of settings (overridden by env and flags)."),
]
SetOption = Annotated[
    list[str] | None,
    typer.Option(
        "--set", help="Override any setting: --set read.max_file_bytes=1000000 (repeatable)."
    ),
]


F = TypeVar("F", bound=Callable[..., Any])


def friendly_errors(command: F) -> F:
    """Turn the project's errors and missing inputs into a one-line message and exit status 2."""

    @functools.wraps(command)
    def wrapper(*args: Any, **kwargs: Any) -> Any:
        try:
            return command(*args, **kwargs)
        except (AgirError, FileNotFoundError) as error:
            console.print(f"[red]error:[/red] {error}")
            raise typer.Exit(2) from error

    return wrapper  # type: ignore[return-value]


def _help(model: type, key: str) -> str:
    return field_description(model, key)


def _overrides(pairs: list[str] | None, **flags: Any) -> dict[str, Any]:
    """Collect flags (None = not given) and ``--set key=value`` pairs into dotted overrides."""
    import yaml

    overrides = {key.replace("__", "."): value for key, value in flags.items()}
    for pair in pairs or []:
        key, sep, raw = pair.partition("=")
        if not sep:
            raise typer.BadParameter(f"--set takes key=value, got {pair!r}")
        overrides[key.strip()] = yaml.safe_load(raw) if raw else raw
    return overrides


@app.callback()
def _main(
    verbose: Annotated[bool, typer.Option("--verbose", "-v", help="Log at DEBUG level.")] = False,
) -> None:
    logging.basicConfig(
        level=logging.DEBUG if verbose else logging.INFO,
        format="%(message)s",
        handlers=[RichHandler(console=console, show_path=False)],
    )


@app.command()
@friendly_errors
def ingest(
    inputs: Annotated[list[str], typer.Argument(help=_help(IngestConfig, "inputs"))],
    out: Annotated[str | None, typer.Option(help=_help(IngestConfig, "out"))] = None,
    workers: Annotated[int | None, typer.Option(help=_help(IngestConfig, "workers"))] = None,
    shard_bytes: Annotated[
        int | None, typer.Option(help=_help(IngestConfig, "shard_bytes"))
    ] = None,
    config: ConfigOption = None,
    set_: SetOption = None,
) -> None:
    """Read, validate, score and pair run files: runs, scored, pairs, quarantine, report."""
    loaded = load_config(
        IngestConfig,
        config,
        _overrides(set_, inputs=inputs or None, out=out, workers=workers, shard_bytes=shard_bytes),
    )
    settings = loaded.config
    _ingest_with_progress(settings)


@app.command()
@friendly_errors
def dataset(
    inputs: Annotated[list[str], typer.Argument(help=_help(BuildDatasetConfig, "inputs"))],
    out: Annotated[str | None, typer.Option(help=_help(BuildDatasetConfig, "out"))] = None,
    base_model: Annotated[
        str | None, typer.Option(help=_help(BuildDatasetConfig, "base_model"))
    ] = None,
    work_dir: Annotated[
        str | None, typer.Option(help=_help(BuildDatasetConfig, "work_dir"))
    ] = None,
    ray_address: Annotated[
        str | None, typer.Option(help=_help(BuildDatasetConfig, "ray_address"))
    ] = None,
    config: ConfigOption = None,
    set_: SetOption = None,
) -> None:
    """Build DPO and KTO data: shards on Ray, garbling on a Ray actor pool, Prefect flow."""
    loaded = load_config(
        BuildDatasetConfig,
        config,
        _overrides(
            set_,
            inputs=inputs or None,
            out=out,
            base_model=base_model,
            work_dir=work_dir,
            ray_address=ray_address,
        ),
    )
    result = run_build_dataset(loaded.config)
    _print_build_report(result.report, result.out)


def run_build_dataset(settings: BuildDatasetConfig):
    """Run the build-dataset flow on the configured (or a local) Prefect API and Ray."""
    from flows.runtime import prefect_api, ray_task_runner

    with prefect_api():
        from flows.build_dataset import build_dataset

        runner = ray_task_runner(settings.ray_address, settings.ray_num_cpus)
        return build_dataset.with_options(task_runner=runner)(settings)


@app.command()
@friendly_errors
def train(
    dataset: Annotated[str, typer.Argument(help=_help(TrainConfig, "dataset"))],
    base_model: Annotated[str | None, typer.Option(help=_help(TrainConfig, "base_model"))] = None,
    out: Annotated[str | None, typer.Option(help=_help(TrainConfig, "out"))] = None,
    processes: Annotated[
        int | None, typer.Option(help=_help(TrainConfig, "launch.num_processes"))
    ] = None,
    accelerate_config: Annotated[
        str | None, typer.Option(help=_help(TrainConfig, "launch.accelerate_config"))
    ] = None,
    reference: Annotated[str | None, typer.Option(help=_help(TrainConfig, "reference"))] = None,
    quantize: Annotated[bool | None, typer.Option(help=_help(TrainConfig, "quantize"))] = None,
    resume: Annotated[bool | None, typer.Option(help=_help(TrainConfig, "resume"))] = None,
    merge: Annotated[bool | None, typer.Option(help=_help(TrainConfig, "merge"))] = None,
    max_steps: Annotated[int | None, typer.Option(help=_help(TrainConfig, "dpo.max_steps"))] = None,
    backend: Annotated[str | None, typer.Option(help=_help(TrainConfig, "submit.backend"))] = None,
    config: ConfigOption = None,
    set_: SetOption = None,
) -> None:
    """Train a QLoRA DPO adapter here, in the GPU image on Docker, or on a Prefect GPU pool."""
    loaded = load_config(
        TrainConfig,
        config,
        _overrides(
            set_,
            dataset=dataset,
            base_model=base_model,
            out=out,
            launch__num_processes=processes,
            launch__accelerate_config=accelerate_config,
            reference=reference,
            quantize=quantize,
            resume=resume,
            merge=merge,
            dpo__max_steps=max_steps,
            submit__backend=backend,
        ),
    )
    settings = loaded.config
    if settings.submit.backend == "prefect":
        from flows.runtime import prefect_api
        from flows.train import train as train_flow

        with prefect_api():
            metrics = train_flow(settings)
    elif settings.submit.backend == "docker" or settings.launch.num_processes > 1:
        from tasks.submit import submit

        submit(settings, on_line=_echo)
        metrics = json.loads((Path(settings.out) / "metrics.json").read_text())
    else:  # one process here: run the program in this process
        from tasks.training import main as train_main

        metrics = train_main(settings).metrics
    _print_train_summary(metrics, settings.out)


def _echo(line: str) -> None:
    console.print(line, markup=False, highlight=False)


@app.command()
@friendly_errors
def archive(
    training_out: Annotated[
        Path, typer.Argument(help="A training output folder (adapter, metrics, ...).")
    ],
    to: Annotated[
        str, typer.Option(help="A folder or URL for the archive, or a .tar.gz path.")
    ] = "archives",
    dataset: Annotated[
        Path | None, typer.Option(help="The dataset folder trained on: its hash and report go in.")
    ] = None,
) -> None:
    """Archive a trained adapter with a MANIFEST.json (sha256 and size of every file, versions)."""
    from tasks.archive import create_archive

    location = create_archive(training_out, to, dataset=dataset)
    console.print(f"archive: {location}")


@app.command()
@friendly_errors
def verify(
    archive_path: Annotated[str, typer.Argument(metavar="ARCHIVE", help="A .tar.gz path or URL.")],
) -> None:
    """Check an archive against its MANIFEST.json; exit status 1 if anything differs."""
    from tasks.archive import verify_archive

    result = verify_archive(archive_path)
    if result.ok:
        console.print(f"ok: {result.files} files match the manifest of {archive_path}")
        return
    for problem in result.problems:
        console.print(f"[red]{problem}[/red]")
    raise typer.Exit(1)


@app.command()
@friendly_errors
def synth(
    out: Annotated[Path, typer.Option(help="Folder for the corpus and its ground_truth.json.")],
    runs: Annotated[int, typer.Option(help="Copy strategy agents (runs) to write, in all.")] = 200,
    seed: Annotated[int, typer.Option(help="Random seed; the same seed gives the same bytes.")] = 0,
    env_kib: Annotated[
        int, typer.Option(help="Mean size of the pasted container listings, in KiB per file.")
    ] = 8,
) -> None:
    """Write an upstream-shaped synthetic corpus covering every class and quirk, with ground truth."""
    from tasks.synth import write_corpus

    truth = write_corpus(out, runs=runs, seed=seed, env_kib=env_kib)
    console.print(
        f"wrote {truth.files} files ({truth.runs} runs, {truth.bytes / 1e6:.1f} MB) to "
        f"{out / 'runs'}; ground truth in {out / 'ground_truth.json'}"
    )


@app.command()
@friendly_errors
def demo(
    out: Annotated[Path, typer.Option(help="Folder for everything the demo makes.")] = Path(
        "demo-out"
    ),
    runs: Annotated[int, typer.Option(help="Runs in the synthetic corpus.")] = 200,
    seed: Annotated[int, typer.Option(help="Seed of the synthetic corpus.")] = 0,
) -> None:
    """Run the main job on the embedded default: a synthetic corpus, then ingest it."""
    from tasks.synth import write_corpus

    corpus = out / "corpus"
    if not (corpus / "runs").is_dir():
        truth = write_corpus(corpus, runs=runs, seed=seed)
        console.print(
            f"synthetic corpus: {truth.files} files, {truth.runs} runs in {corpus / 'runs'}"
        )
    settings = load_config(
        IngestConfig, flags={"inputs": [str(corpus / "runs")], "out": str(out / "dataset")}
    ).config
    _ingest_with_progress(settings)


def _ingest_with_progress(settings: IngestConfig) -> None:
    from tasks.ingest import ingest as run_ingest

    progress = _progress()
    task = progress.add_task("ingest", total=None)

    def on_plan(shards: list) -> None:
        # Started only now: the worker pool forks before this display starts its thread.
        progress.update(task, total=sum(s.size_bytes for s in shards))
        progress.start()

    try:
        report = run_ingest(
            settings.inputs,
            settings.out,
            limits=settings.read.limits(),
            shard_bytes=settings.shard_bytes,
            workers=settings.workers,
            on_plan=on_plan,
            on_shard_done=lambda shard: progress.advance(task, shard.size_bytes),
        )
    finally:
        progress.stop()
    _print_report(report.to_dict(), settings.out)


def _progress() -> Progress:
    return Progress(
        "[progress.description]{task.description}",
        BarColumn(),
        DownloadColumn(),
        TransferSpeedColumn(),
        TimeRemainingColumn(),
        console=console,
        transient=True,
    )


def _print_report(report: dict[str, Any], out: str) -> None:
    table = Table(title=f"ingest -> {out}", show_header=True)
    table.add_column("what")
    table.add_column("count", justify="right")
    table.add_row(
        "files in / read / quarantined",
        f"{report['files_in']} / {report['files_read']} / {report['files_quarantined']}",
    )
    table.add_row("runs in / quarantined", f"{report['runs_in']} / {report['runs_quarantined']}")
    for run_class, count in report["runs_by_class"].items():
        table.add_row(f"  runs {run_class}", str(count))
    for rule, count in report["pairs_by_rule"].items():
        if count:
            table.add_row(f"  pairs {rule}", str(count))
    table.add_row("garble requests", str(report["garble_requests"]))
    for reason, count in report["quarantine_reasons"].items():
        table.add_row(f"  quarantined: {reason}", str(count))
    Console().print(table)


def _print_train_summary(metrics: dict[str, Any], out: str) -> None:
    table = Table(title=f"train -> {out}", show_header=True)
    table.add_column("what")
    table.add_column("value", justify="right")
    params, train_metrics = metrics["parameters"], metrics["train"]
    table.add_row("trainable / total parameters", f"{params['trainable']:,} / {params['total']:,}")
    table.add_row("steps", str(train_metrics["global_step"]))
    table.add_row("train loss", f"{train_metrics.get('train_loss', float('nan')):.4f}")
    for split, values in metrics.get("evaluation", {}).items():
        table.add_row(
            f"eval {split}: reward accuracy / margin",
            f"{values['rewards/accuracies']:.3f} / {values['rewards/margins']:.4f}",
        )
    Console().print(table)


def _print_build_report(report: dict[str, Any], out: str) -> None:
    _print_report(report, out)
    export, garbling = report["export"], report["garbling"]
    table = Table(title="dataset", show_header=True)
    table.add_column("what")
    table.add_column("count", justify="right")
    table.add_row(
        "DPO rows train / eval", f"{export['dpo_train_rows']} / {export['dpo_eval_rows']}"
    )
    table.add_row("duplicates dropped", str(export["duplicates_dropped"]))
    table.add_row("KTO rows", str(export["kto_rows"]))
    table.add_row(
        "garbled (model / fallback / cached)",
        f"{garbling['model']} / {garbling['fallback']} / {garbling['cached']}",
    )
    table.add_row("shards (reused)", f"{report['shards']['total']} ({report['shards']['cached']})")
    for stage, seconds in report["timing_s"].items():
        table.add_row(f"time {stage}", f"{seconds:.1f} s")
    Console().print(table)
    Console().print(
        f"DPO files: {out}/dpo/train.jsonl, {out}/dpo/eval.jsonl; KTO: {out}/kto/train.jsonl"
    )


def main() -> None:
    """Run the CLI."""
    app()


if __name__ == "__main__":
    main()
