"""Commands that train and deliver: ``train``, ``archive``, ``verify``, ``retrain``, ``demo``."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Annotated, Any

import typer

from agir_retrain.flows.cli_app import console, echo, printable
from agir_retrain.flows.cli_commands import Flag, SettingsCommand, flow_runner
from agir_retrain.flows.cli_output import print_retrain, print_train_summary
from agir_retrain.tasks.objectives import ORIGINAL
from agir_retrain.tasks.settings.retrain import RetrainConfig
from agir_retrain.tasks.settings.train import TrainConfig
from agir_retrain.tasks.training.metrics import TrainingMetrics


def generations_from_datasets(flags: dict[str, Any]) -> dict[str, Any]:
    """DATASET... names the dataset, or several generations' (the last is the newest)."""
    datasets = flags.pop("dataset")
    flags["dataset"] = datasets[-1]
    if len(datasets) > 1 or "generations.window" in flags:
        flags["generations.datasets"] = datasets
    return flags


def submit_training(settings: TrainConfig) -> TrainingMetrics:
    """Train where ``submit.backend`` says (``flows/train.submit``) and read the metrics back."""
    from agir_retrain.flows.train import submit  # the one place that decides where it runs
    from agir_retrain.tasks.filenames import METRICS_FILE
    from agir_retrain.tasks.io import join, read_bytes

    result = submit(settings, on_line=echo)
    return TrainingMetrics.from_json(json.loads(read_bytes(join(result.out, METRICS_FILE))))


TRAIN = SettingsCommand(
    name="train",
    settings=TrainConfig,
    flags=(
        Flag(
            key="dataset", argument=True, many=True, metavar="DATASET...",
            help="A dataset folder (or JSONL file); several: one per generation, oldest first "
            "(generations.datasets), trained on together within --window.",
        ),
        Flag(key="base_model"), Flag(key="out"), Flag(key="launch.num_processes", name="processes"),
        Flag(key="launch.accelerate_config"), Flag(key="objective"), Flag(key="quantize"),
        Flag(key="resume"), Flag(key="merge"), Flag(key="max_steps"),
        Flag(key="submit.backend", name="backend"), Flag(key="generations.window", name="window"),
    ),
    adjust=generations_from_datasets,
    run=submit_training,
    show=lambda settings, metrics: print_train_summary(metrics, settings.out),
    help="Train a QLoRA adapter with any registered objective, here, in the GPU image on "
    "Docker, or on a Prefect GPU pool.",
)  # fmt: skip


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


RETRAIN = SettingsCommand(
    name="retrain",
    settings=RetrainConfig,
    flags=(
        Flag(key="inputs", argument=True), Flag(key="out"), Flag(key="base_model"),
        Flag(key="train.submit.backend", name="backend"),
        Flag(key="build.ray_address"),
    ),
    run=flow_runner("agir_retrain.flows.retrain:retrain"),
    show=lambda _settings, result: print_retrain(result),
    help="Build the dataset, train the adapter on it, and archive it: the whole job, as one flow.",
)  # fmt: skip


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
    """The whole job on the embedded default: corpus, dataset, a short training run, evaluation, archive.

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
            # A short run of the default objective: the point is the whole path, on a CPU,
            # in a few minutes.
            "train": {
                ORIGINAL: {
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
    RETRAIN(settings)


COMMANDS = (TRAIN, archive, verify, RETRAIN, demo)
