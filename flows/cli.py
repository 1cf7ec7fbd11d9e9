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

from agir_retrain.flows.cli_output import (
    print_build_report,
    print_report,
    print_retrain,
    print_train_summary,
    progress,
)
from agir_retrain.tasks.errors import AgirError
from agir_retrain.tasks.settings.loader import field_description, load_config
from agir_retrain.tasks.settings.models import (
    BuildDatasetConfig,
    IngestConfig,
    RetrainConfig,
    TrainConfig,
)

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
        from agir_retrain.flows.runtime import prefect_api
        from agir_retrain.flows.train import train as train_flow

        with prefect_api():
            metrics = train_flow(settings)
    elif settings.submit.backend == "docker" or settings.launch.num_processes > 1:
        from agir_retrain.tasks.delivery.submit import submit

        submit(settings, on_line=_echo)
        metrics = json.loads((Path(settings.out) / "metrics.json").read_text())
    else:  # one process here: run the program in this process
        from agir_retrain.tasks.training.program import main as train_main

        metrics = train_main(settings).metrics
    print_train_summary(metrics, settings.out)


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
    from agir_retrain.tasks.delivery.archive import create_archive

    location = create_archive(training_out, to, dataset=dataset)
    console.print(f"archive: {location}")


@app.command()
@friendly_errors
def verify(
    archive_path: Annotated[str, typer.Argument(metavar="ARCHIVE", help="A .tar.gz path or URL.")],
) -> None:
    """Check an archive against its MANIFEST.json; exit status 1 if anything differs."""
    from agir_retrain.tasks.delivery.archive import verify_archive

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
    from agir_retrain.tasks.synth.corpus import write_corpus

    truth = write_corpus(out, runs=runs, seed=seed, env_kib=env_kib)
    console.print(
        f"wrote {truth.files} files ({truth.runs} runs, {truth.bytes / 1e6:.1f} MB) to "
        f"{out / 'runs'}; ground truth in {out / 'ground_truth.json'}"
    )


@app.command()
@friendly_errors
def retrain(
    inputs: Annotated[list[str], typer.Argument(help=_help(RetrainConfig, "inputs"))],
    out: Annotated[str | None, typer.Option(help=_help(RetrainConfig, "out"))] = None,
    base_model: Annotated[str | None, typer.Option(help=_help(RetrainConfig, "base_model"))] = None,
    backend: Annotated[
        str | None, typer.Option(help=_help(RetrainConfig, "train.submit.backend"))
    ] = None,
    ray_address: Annotated[
        str | None, typer.Option(help=_help(RetrainConfig, "build.ray_address"))
    ] = None,
    config: ConfigOption = None,
    set_: SetOption = None,
) -> None:
    """Build the dataset, train the adapter on it, and archive it: the whole job, as one flow."""
    flags = _overrides(
        set_,
        inputs=inputs or None,
        out=out,
        base_model=base_model,
        train__submit__backend=backend,
        build__ray_address=ray_address,
    )
    result = run_retrain(load_config(RetrainConfig, config, flags).config)
    print_retrain(result)


def run_retrain(settings: RetrainConfig):
    """Run the retrain flow on the configured (or a local) Prefect API."""
    from agir_retrain.flows.runtime import prefect_api

    with prefect_api():
        from agir_retrain.flows.retrain import retrain as retrain_flow

        return retrain_flow(settings)


@app.command()
@friendly_errors
def demo(
    out: Annotated[Path, typer.Option(help="Folder for everything the demo makes.")] = Path(
        "demo-out"
    ),
    inputs: Annotated[
        list[str] | None,
        typer.Option("--inputs", help="Run files to use instead of a synthetic corpus."),
    ] = None,
    runs: Annotated[
        int, typer.Option(help="Runs in the synthetic corpus, when no inputs are given.")
    ] = 200,
    seed: Annotated[int, typer.Option(help="Seed of the synthetic corpus.")] = 0,
) -> None:
    """The whole job on the embedded default: corpus, dataset, a short DPO run, archive.

    Makes the tiny local model and a synthetic corpus when none is given, then runs the
    retrain flow (Prefect's local API, local Ray, the local training backend).
    """
    from agir_retrain.tasks.synth.corpus import write_corpus

    if not inputs:
        corpus = out / "corpus"
        if not (corpus / "runs").is_dir():
            truth = write_corpus(corpus, runs=runs, seed=seed)
            console.print(
                f"synthetic corpus: {truth.files} files, {truth.runs} runs in {corpus / 'runs'}"
            )
        inputs = [str(corpus / "runs")]
    settings = RetrainConfig.model_validate(
        {
            "inputs": inputs,
            "out": str(out),
            # A short run: the point is the whole path, on a CPU, in a few minutes.
            "train": {
                "dpo": {
                    "max_steps": 20,
                    "max_length": 1024,
                    "batch_size": 2,
                    "gradient_accumulation": 2,
                    "save_steps": 10,
                }
            },
        }
    )
    print_retrain(run_retrain(settings))


def _ingest_with_progress(settings: IngestConfig) -> None:
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
            limits=settings.read.limits(),
            shard_bytes=settings.shard_bytes,
            workers=settings.workers,
            on_plan=on_plan,
            on_shard_done=lambda shard: bar.advance(task, shard.size_bytes),
        )
    finally:
        bar.stop()
    print_report(report.to_dict(), settings.out)


config_app = typer.Typer(help="Inspect settings.", no_args_is_help=True)
app.add_typer(config_app, name="config")
CONFIGS = {
    "ingest": IngestConfig,
    "dataset": BuildDatasetConfig,
    "train": TrainConfig,
    "retrain": RetrainConfig,
}


@config_app.command("show")
@friendly_errors
def config_show(
    command: Annotated[str, typer.Argument(help=f"One of: {', '.join(CONFIGS)}.")],
    config: ConfigOption = None,
    set_: SetOption = None,
) -> None:
    """Print a command's effective settings, one a line, and where each came from.

    Sources: default, file:<path>, env:<NAME> or flag (a default derived from another
    setting, such as build.out from out, shows as default).
    """
    from agir_retrain.tasks.settings.loader import leaf_keys, masked, value_at

    if command not in CONFIGS:
        raise typer.BadParameter(f"{command!r}: choose one of {', '.join(CONFIGS)}")
    model = CONFIGS[command]
    loaded = load_config(model, config, _overrides(set_))
    width = max(map(len, leaf_keys(model)))
    for key in leaf_keys(model):
        value = json.dumps(masked(value_at(loaded.config, key)), default=str)
        print(f"{key:<{width}} = {value}  # {loaded.sources.get(key, 'default')}")


def main() -> None:
    """Run the CLI."""
    app()


if __name__ == "__main__":
    main()
