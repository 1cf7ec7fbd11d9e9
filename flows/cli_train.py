"""Commands that train and deliver: ``train``, ``archive``, ``verify``, ``retrain``, ``demo``."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Annotated

import typer

from agir_retrain.flows.cli_app import (
    ConfigOption,
    SetOption,
    app,
    console,
    echo,
    friendly_errors,
    overrides,
    printable,
)
from agir_retrain.flows.cli_output import print_retrain, print_train_summary
from agir_retrain.tasks.settings.loader import field_description as describe
from agir_retrain.tasks.settings.loader import load_config
from agir_retrain.tasks.settings.models import RetrainConfig, TrainConfig


@app.command()
@friendly_errors
def train(
    datasets: Annotated[
        list[str],
        typer.Argument(
            metavar="DATASET...",
            help="A dataset folder (or JSONL file); several: one per generation, oldest first "
            "(generations.datasets), trained on together within --window.",
        ),
    ],
    base_model: Annotated[
        str | None, typer.Option(help=describe(TrainConfig, "base_model"))
    ] = None,
    out: Annotated[str | None, typer.Option(help=describe(TrainConfig, "out"))] = None,
    processes: Annotated[
        int | None, typer.Option(help=describe(TrainConfig, "launch.num_processes"))
    ] = None,
    accelerate_config: Annotated[
        str | None, typer.Option(help=describe(TrainConfig, "launch.accelerate_config"))
    ] = None,
    objective: Annotated[str | None, typer.Option(help=describe(TrainConfig, "objective"))] = None,
    reference: Annotated[str | None, typer.Option(help=describe(TrainConfig, "reference"))] = None,
    quantize: Annotated[bool | None, typer.Option(help=describe(TrainConfig, "quantize"))] = None,
    resume: Annotated[bool | None, typer.Option(help=describe(TrainConfig, "resume"))] = None,
    merge: Annotated[bool | None, typer.Option(help=describe(TrainConfig, "merge"))] = None,
    max_steps: Annotated[
        int | None,
        typer.Option(help="Optimizer steps of the chosen objective (its max_steps setting)."),
    ] = None,
    backend: Annotated[
        str | None, typer.Option(help=describe(TrainConfig, "submit.backend"))
    ] = None,
    window: Annotated[
        str | None, typer.Option(help=describe(TrainConfig, "generations.window"))
    ] = None,
    config: ConfigOption = None,
    set_: SetOption = None,
) -> None:
    """Train a QLoRA adapter (DPO, SFT, KTO or GRPO) here, in the GPU image on Docker, or on a Prefect GPU pool."""
    loaded = load_config(
        TrainConfig,
        config,
        overrides(
            set_,
            dataset=datasets[-1],
            generations__datasets=datasets if len(datasets) > 1 or window else None,
            generations__window=window,
            base_model=base_model,
            out=out,
            launch__num_processes=processes,
            launch__accelerate_config=accelerate_config,
            objective=objective,
            reference=reference,
            quantize=quantize,
            resume=resume,
            merge=merge,
            submit__backend=backend,
        ),
    )
    settings = loaded.config
    if max_steps is not None:  # the section of whichever objective the settings chose
        section = getattr(settings, settings.objective)
        settings = settings.model_copy(
            update={settings.objective: section.model_copy(update={"max_steps": max_steps})}
        )
    from agir_retrain.flows.train import submit  # the one place that decides where it runs
    from agir_retrain.tasks.filenames import METRICS_FILE
    from agir_retrain.tasks.io import join, read_bytes
    from agir_retrain.tasks.training.metrics import TrainingMetrics

    result = submit(settings, on_line=echo)
    metrics = TrainingMetrics.from_json(json.loads(read_bytes(join(result.out, METRICS_FILE))))
    print_train_summary(metrics, settings.out)


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
    console.print(f"archive: {printable(str(location))}")


@app.command()
@friendly_errors
def verify(
    archive_path: Annotated[str, typer.Argument(metavar="ARCHIVE", help="A .tar.gz path or URL.")],
) -> None:
    """Check an archive against its MANIFEST.json; exit status 1 if anything differs."""
    from agir_retrain.tasks.delivery.archive import verify_archive

    result = verify_archive(archive_path)
    if result.ok:
        console.print(f"ok: {result.files} files match the manifest of {printable(archive_path)}")
        return
    for problem in result.problems:
        console.print(printable(problem), style="red", highlight=False)  # names escaped
    raise typer.Exit(1)


@app.command()
@friendly_errors
def retrain(
    inputs: Annotated[list[str], typer.Argument(help=describe(RetrainConfig, "inputs"))],
    out: Annotated[str | None, typer.Option(help=describe(RetrainConfig, "out"))] = None,
    base_model: Annotated[
        str | None, typer.Option(help=describe(RetrainConfig, "base_model"))
    ] = None,
    backend: Annotated[
        str | None, typer.Option(help=describe(RetrainConfig, "train.submit.backend"))
    ] = None,
    ray_address: Annotated[
        str | None, typer.Option(help=describe(RetrainConfig, "build.ray_address"))
    ] = None,
    config: ConfigOption = None,
    set_: SetOption = None,
) -> None:
    """Build the dataset, train the adapter on it, and archive it: the whole job, as one flow."""
    flags = overrides(
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
    """The whole job on the embedded default: corpus, dataset, a short DPO run, evaluation, archive.

    Makes the tiny local model and a synthetic corpus when none is given, then runs the
    retrain flow (Prefect's local API, local Ray, the local training backend).
    """
    from agir_retrain.tasks.synth.corpus import write_corpus

    if not inputs:
        corpus = out / "corpus"
        if not (corpus / "runs").is_dir():
            truth = write_corpus(corpus, runs=runs, seed=seed)
            console.print(
                f"synthetic corpus: {truth.files} files, {truth.runs} runs in "
                f"{printable(str(corpus / 'runs'))}"
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
            # Base against the new adapter in the sandbox, on a few held-out runs. A tiny
            # random model writes no program that runs: expect zeros, honestly reported.
            "evaluate": True,
            "evaluation": {"max_tasks": 8, "samples": 2, "max_new_tokens": 64},
        }
    )
    print_retrain(run_retrain(settings))
