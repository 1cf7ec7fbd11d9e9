"""The training program: any registered objective on a 4-bit base with LoRA on every linear layer.

    # one process (the CPU here, or one GPU), from a settings file, changed by --set pairs
    python -m agir_retrain.tasks.training --config train.yaml --set max_steps=10

    # several GPUs with DDP, or sharded FSDP-QLoRA
    accelerate launch --config_file container/accelerate/ddp.yaml --num_processes 4 \\
        -m agir_retrain.tasks.training --config out/train_config.yaml

The settings are ``TrainConfig``, resolved once by whoever submits the job (``agir-retrain
train`` writes them to ``out/train_config.yaml``) and read here as they are: the job does
not read ``AGIR_*`` variables again. The recipe, one named step each: ``check_data``
(every row, before any model is loaded) -> ``load_tokenizer`` -> ``fit_data``
(conversations conformed to the chat template, over-long rows fitted, both counted) ->
``load_policy`` (4-bit NF4) -> the objective's ``build_trainer`` -> train ->
``evaluate_splits`` -> ``save_adapter`` -> ``write_outputs`` (adapter, tokenizer,
``metrics.json``, curves, model card in ``out``).
"""

from __future__ import annotations

import argparse
import logging
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from agir_retrain.tasks.errors import ConfigError
from agir_retrain.tasks.objectives import DataFiles, Objective, TrainingData, objective
from agir_retrain.tasks.settings.loader import load_config, parse_set_pairs
from agir_retrain.tasks.settings.train import TrainConfig
from agir_retrain.tasks.training.fitting import FitStats, conform_rows, fit_rows
from agir_retrain.tasks.training.metrics import (
    ChatSummary,
    DataSummary,
    EvalSplit,
    ParameterSummary,
    SplitData,
    TrackedRun,
    TrainingMetrics,
    TrainSummary,
)
from agir_retrain.tasks.training.preference import row_format


@dataclass(frozen=True, slots=True, kw_only=True)
class FittedRows:
    """Rows rendered-ready for the tokenizer: conformed to its template, fitted to the budget."""

    train: list[dict[str, Any]]
    eval: list[dict[str, Any]]
    train_fit: FitStats
    eval_fit: FitStats
    chat: ChatSummary


@dataclass(frozen=True, slots=True, kw_only=True)
class Prepared:
    """A trainer ready to run, and what went into it."""

    config: TrainConfig
    trainer: Any
    tokenizer: Any
    base_model: str
    files: DataFiles
    fitted: FittedRows
    targets: list[str]
    trl_dropped: int


@dataclass(frozen=True, slots=True, kw_only=True)
class TrainResult:
    """Where the outputs are, and the metrics written to ``metrics.json``."""

    out: str
    metrics: TrainingMetrics


def main(config: TrainConfig) -> TrainResult:
    """Train an adapter with the configured objective; see the module docstring."""
    from agir_retrain.tasks.training.tracking import tracking_session

    rows = check_data(config)  # the trackers and every row, before any tracker or model starts
    with tracking_session(config.out, config.tracking) as tracked:
        return run(prepare(config, rows), tracked=tracked)


def prepare(config: TrainConfig, rows: TrainingData | None = None) -> Prepared:
    """Check and fit the data, load the base (4-bit) and LoRA, and build the objective's trainer.

    ``rows``: what ``check_data`` returned, when the caller checked already.
    """
    from agir_retrain.tasks.models.resolve import resolve_model
    from agir_retrain.tasks.training.model import load_policy, lora_config, lora_targets

    log = start_process_group()
    if rows is None:
        rows = check_data(config)  # a bad file stops here, before any model is loaded
    log.info(
        "data: %d training rows from %s, %d eval rows",
        len(rows.train), rows.files.train, len(rows.eval), main_process_only=True,
    )  # fmt: skip
    base = resolve_model(config.base_model)
    tokenizer = load_tokenizer(base, trust_remote_code=config.trust_remote_code)
    chosen = objective(config.objective)
    fitted = fit_data(rows, tokenizer, chosen.max_length(config))
    model, checkpointing = load_policy(
        base,
        quantize=config.quantize,
        gradient_checkpointing=config.section().gradient_checkpointing,
        trust_remote_code=config.trust_remote_code,
        dtype=config.dtype,
    )
    targets = config.lora.target_modules or lora_targets(model)
    trainer = chosen.build_trainer(
        config,
        base=base,
        model=model,
        tokenizer=tokenizer,
        peft_config=lora_config(config.lora, targets),
        train_rows=fitted.train,
        eval_rows=fitted.eval,
        gradient_checkpointing=checkpointing,
    )
    return Prepared(
        config=config,
        trainer=trainer,
        tokenizer=tokenizer,
        base_model=base,
        files=rows.files,
        fitted=fitted,
        targets=targets,
        # TRL drops a row whose prompt alone fills max_length; fitted rows never do, but count.
        trl_dropped=len(fitted.train) - len(trainer.train_dataset),
    )


def start_process_group() -> Any:
    """Join (or make) the process group, and return the rank-aware logger."""
    import torch
    from accelerate import PartialState
    from accelerate.logging import get_logger

    # State is shared and the first creation wins: without cpu=True here, ranks launched on
    # a machine with no GPU would each train alone instead of joining one gloo group
    # (accelerate 1.15).
    PartialState(cpu=not torch.cuda.is_available())
    return get_logger(__name__)


def check_data(config: TrainConfig) -> TrainingData:
    """Check the trackers, then find and check every row of the objective (no model needed)."""
    from agir_retrain.tasks.training.tracking import check_trackers

    check_trackers(config.tracking)
    return objective(config.objective).load_data(config)


def load_tokenizer(base: str, *, trust_remote_code: bool = False) -> Any:
    """The base model's tokenizer."""
    from transformers import AutoTokenizer

    return AutoTokenizer.from_pretrained(base, trust_remote_code=trust_remote_code)


def fit_data(rows: TrainingData, tokenizer: Any, max_length: int) -> FittedRows:
    """Conform conversations to the chat template, then fit every row to ``max_length`` tokens.

    Raises:
        ChatTemplateError: conversational rows, and a tokenizer without a usable template.
        DatasetError: no training row fits.
    """
    from agir_retrain.tasks.chat import template_traits
    from agir_retrain.tasks.errors import DatasetError
    from agir_retrain.tasks.training.completions import as_pairs, from_pairs, is_pair_rows

    chat = ChatSummary()
    train, evaluation = rows.train, rows.eval
    # Completion and prompt-only rows are fitted through a pair view.
    paired = is_pair_rows(train)
    if not paired:
        train, evaluation = as_pairs(train), as_pairs(evaluation)
    if any(row_format(row) == "conversational" for row in train + evaluation):
        traits = template_traits(tokenizer)
        train, train_counts = conform_rows(train, traits)
        evaluation, eval_counts = conform_rows(evaluation, traits)
        chat = ChatSummary(
            system_role=traits.system_role,
            consecutive_turns=traits.consecutive_turns,
            conversations=train_counts.conversations + eval_counts.conversations,
            changed=train_counts.changed + eval_counts.changed,
            turns_merged=train_counts.turns_merged + eval_counts.turns_merged,
            systems_folded=train_counts.systems_folded + eval_counts.systems_folded,
        )
    train, train_fit = fit_rows(train, tokenizer, max_length)
    evaluation, eval_fit = fit_rows(evaluation, tokenizer, max_length)
    if not train:
        raise DatasetError(
            f"{rows.files.train}: no row fits max_length={max_length} tokens "
            f"({train_fit.rows_dropped} dropped, e.g. {train_fit.dropped_examples}); raise max_length"
        )
    if not paired:
        train, evaluation = from_pairs(train), from_pairs(evaluation)
    return FittedRows(
        train=train, eval=evaluation, train_fit=train_fit, eval_fit=eval_fit, chat=chat
    )


def run(prepared: Prepared, *, tracked: tuple[TrackedRun, ...] = ()) -> TrainResult:
    """Train, evaluate (overall and by provenance), save, and write the run's outputs.

    ``tracked``: where the trackers hold the run (``tracking_session``), for the outputs.
    """
    from accelerate.logging import get_logger

    from agir_retrain.tasks.training.model import merge_adapter, parameter_counts, save_adapter
    from agir_retrain.tasks.training.outputs import write_outputs

    log = get_logger(__name__)
    config, trainer = prepared.config, prepared.trainer
    counts = parameter_counts(trainer.model)
    chosen = objective(config.objective)
    log.info(
        "LoRA on %s: %d of %d parameters trainable (%.3f%%); reference: %s",
        prepared.targets, counts.trainable, counts.total, counts.trainable_percent,
        chosen.reference(config), main_process_only=True,
    )  # fmt: skip

    # Train, resuming from the last checkpoint if asked and one exists.
    resume_from = last_complete_checkpoint(config.out) if config.resume else None
    if config.resume and resume_from is None:
        log.info("no checkpoint in %s: starting from scratch", config.out, main_process_only=True)
    train_output = trainer.train(resume_from_checkpoint=resume_from)
    evaluation, history = evaluate_splits(trainer, prepared.fitted.eval, chosen)

    save_adapter(trainer, config.out)
    metrics = TrainingMetrics(
        objective=chosen.name,
        base_model=prepared.base_model,
        reference=chosen.reference(config),
        quantized=config.quantize,
        world_size=trainer.args.world_size,
        resumed_from_checkpoint=resume_from,
        parameters=ParameterSummary(
            trainable=counts.trainable,
            total=counts.total,
            trainable_percent=counts.trainable_percent,
            lora_targets=tuple(prepared.targets),
        ),
        data=data_summary(prepared),
        train=train_summary(train_output.metrics, trainer.state.global_step),
        evaluation=evaluation,
        log_history=history,
        tracking=tracked,
    )
    if trainer.is_world_process_zero():
        write_outputs(config=config, metrics=metrics, curves=chosen.curves, out=Path(config.out))
        if config.merge:
            merge_adapter(
                prepared.base_model,
                config.out,
                Path(config.out) / "merged",
                trust_remote_code=config.trust_remote_code,
                dtype=config.dtype,
            )
    trainer.accelerator.wait_for_everyone()
    return TrainResult(out=config.out, metrics=metrics)


def evaluate_splits(
    trainer: Any, eval_rows: list[dict[str, Any]], chosen: Objective
) -> tuple[dict[str, EvalSplit], tuple[dict[str, Any], ...]]:
    """Evaluate on every eval row, then on each provenance (garbled or natural rejected side).

    Returns the evaluations and the log history for the curves: training, the scheduled
    evaluations and the final one on every row (not the provenance splits).
    """
    if not eval_rows:
        return {}, tuple(trainer.state.log_history)
    evaluation = {"overall": _eval_split(trainer.evaluate(), "eval", len(eval_rows))}
    history = tuple(trainer.state.log_history)
    for name, garbled in (("garbled", True), ("natural", False)):
        subset = [row for row in eval_rows if row.get("garbled") is garbled]
        if subset:
            result = trainer.evaluate(
                eval_dataset=chosen.to_dataset(subset), metric_key_prefix=f"eval_{name}"
            )
            evaluation[name] = _eval_split(result, f"eval_{name}", len(subset))
    return evaluation, history


def _eval_split(metrics: dict[str, float], prefix: str, rows: int) -> EvalSplit:
    """Strip TRL's key prefixes (it keeps ``eval_`` on reward metrics whatever the prefix)."""
    values = {
        key.removeprefix(f"{prefix}_").removeprefix("eval_"): value
        for key, value in metrics.items()
        if key != "epoch"
    }
    loss = values.pop("loss", None)
    return EvalSplit(rows=rows, loss=loss, values=values)


def train_summary(values: dict[str, float], global_step: int) -> TrainSummary:
    """The trainer's end-of-training figures, with this process's peak GPU and host memory."""
    import resource

    import torch

    peak = torch.cuda.max_memory_allocated() if torch.cuda.is_available() else None
    host = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024  # KiB on Linux
    return TrainSummary(
        global_step=global_step,
        train_loss=values.get("train_loss"),
        train_runtime_s=values.get("train_runtime"),
        epoch=values.get("epoch"),
        peak_gpu_memory_bytes=peak,
        peak_host_memory_bytes=host,
        cpu_threads=torch.get_num_threads(),
        values={
            k: v for k, v in values.items() if k not in ("train_loss", "train_runtime", "epoch")
        },
    )


def data_summary(prepared: Prepared) -> DataSummary:
    """What became of the rows: fitted, trimmed, dropped, conformed to the template."""
    fitted = prepared.fitted

    def split(fit: FitStats, trl_dropped: int = 0) -> SplitData:
        return SplitData(
            rows_in=fit.rows_in,
            rows_trimmed=fit.rows_trimmed,
            rows_dropped=fit.rows_dropped,
            rows_out=fit.rows_out,
            dropped_by_trl=trl_dropped,
        )

    return DataSummary(
        train_file=prepared.files.train,
        eval_file=prepared.files.eval,
        train=split(fitted.train_fit, prepared.trl_dropped),
        eval=split(fitted.eval_fit),
        chat=fitted.chat,
    )


def last_complete_checkpoint(out: str) -> str | None:
    """The newest ``checkpoint-N`` in ``out`` that was finished writing, if any.

    A run killed while saving leaves a folder without ``trainer_state.json``, which the
    Trainer writes after the model, optimizer, scheduler and RNG state; such folders are
    skipped (transformers' own ``get_last_checkpoint`` would pick them and fail).
    """
    folder = Path(out)
    if not folder.is_dir():
        return None
    numbered = sorted(
        (int(path.name.removeprefix("checkpoint-")), path)
        for path in folder.glob("checkpoint-*")
        if path.is_dir() and path.name.removeprefix("checkpoint-").isdigit()
    )
    for step, path in reversed(numbered):
        if (path / "trainer_state.json").is_file():
            return str(path)
        logging.getLogger(__name__).warning(
            "skipping incomplete checkpoint %s (step %d)", path, step
        )
    return None


def make_parser() -> argparse.ArgumentParser:
    """The job's arguments: the settings file, and ``--set key=value`` changes to it."""
    parser = argparse.ArgumentParser(
        prog="python -m agir_retrain.tasks.training", description=__doc__.splitlines()[0]
    )
    parser.add_argument("--config", help="YAML file of TrainConfig settings (defaults without)")
    parser.add_argument(
        "--set",
        action="append",
        default=[],
        metavar="KEY=VALUE",
        help="change any setting, e.g. max_steps=10 or lora.r=8",
    )
    return parser


def parse(argv: list[str]) -> TrainConfig:
    """The job's settings: the file as written, changed by ``--set`` pairs (no ``AGIR_*``).

    Raises:
        SystemExit: a bad file, key or value (its one-line explanation).
    """
    args = make_parser().parse_args(argv)
    try:
        return read_job_config(args.config, parse_set_pairs(args.set))
    except ConfigError as error:
        raise SystemExit(str(error)) from error


def read_job_config(path: str | Path | None, changes: dict[str, Any] | None = None) -> TrainConfig:
    """Read the resolved settings a submitter wrote (``write_config``), exactly as written.

    The environment is not read again: the submitting process applied it once, and a
    variable here must not undo a path the submitter rewrote for this job.
    """
    return load_config(TrainConfig, path, changes, environ={}).config
