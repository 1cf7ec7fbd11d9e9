"""The QLoRA DPO training program: 4-bit base, LoRA on every linear layer, a reference without a second copy.

    # one process (the CPU here, or one GPU)
    python -m agir_retrain.tasks.training --dataset dataset --base-model builtin:tiny --out adapter --set dpo.max_steps=10

    # several GPUs with DDP, or sharded FSDP-QLoRA
    accelerate launch --config_file container/accelerate/ddp.yaml --num_processes 4 \\
        -m agir_retrain.tasks.training --config out/train_config.yaml

Settings come from ``--config FILE.yaml``, ``AGIR_*`` variables and flags (see
``TrainConfig``). The dataset is checked before any model is loaded; over-long rows
are fitted (and counted) before TRL sees them. Writes the adapter, tokenizer,
``metrics.json``, training curves as PNG and a model card to ``out``.
"""

from __future__ import annotations

import argparse
import logging
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

from agir_retrain.tasks.settings.loader import load_config
from agir_retrain.tasks.settings.models import TrainConfig
from agir_retrain.tasks.training.data import FitStats, fit_rows, load_rows, locate


@dataclass(frozen=True, slots=True, kw_only=True)
class Prepared:
    """A trainer ready to run, and what went into it."""

    config: TrainConfig
    trainer: Any
    tokenizer: Any
    base_model: str
    files: Any
    eval_rows: list[dict[str, Any]]
    train_fit: FitStats
    eval_fit: FitStats
    targets: list[str]
    trl_dropped: int


@dataclass(frozen=True, slots=True, kw_only=True)
class TrainResult:
    """Where the outputs are, and the metrics written to ``metrics.json``."""

    out: str
    metrics: dict[str, Any]


def _dataset(rows: list[dict[str, Any]]) -> Any:
    from datasets import Dataset

    return Dataset.from_list(
        [{k: row[k] for k in ("prompt", "chosen", "rejected")} for row in rows]
    )


def main(config: TrainConfig) -> TrainResult:
    """Train a DPO adapter on the configured base model and dataset; see the module docstring."""
    return run(prepare(config))


def prepare(config: TrainConfig) -> Prepared:
    """Check and fit the data, load the base (4-bit), and build the DPO trainer."""
    import torch
    from accelerate import PartialState
    from accelerate.logging import get_logger
    from peft import LoraConfig, prepare_model_for_kbit_training
    from transformers import AutoTokenizer
    from trl import DPOConfig, DPOTrainer

    from agir_retrain.tasks.synth.tiny_model import resolve_model
    from agir_retrain.tasks.training.model import compute_dtype, load_base, lora_targets, use_fsdp

    # The process group, which the logger needs. State is shared and the first creation wins:
    # without cpu=True here, ranks launched on a machine with no GPU would each train alone
    # instead of joining one gloo group (accelerate 1.15).
    PartialState(cpu=not torch.cuda.is_available())
    log = get_logger(__name__)
    # 1. Data first: a bad file stops here, before any model is loaded.
    files = locate(config.dataset, config.eval_dataset)
    train_rows = load_rows(files.train)
    eval_rows = load_rows(files.eval, allow_empty=True) if files.eval else []
    log.info(
        "data: %d training rows from %s, %d eval rows",
        len(train_rows),
        files.train,
        len(eval_rows),
        main_process_only=True,
    )

    base = resolve_model(config.base_model)
    tokenizer = AutoTokenizer.from_pretrained(base, trust_remote_code=config.trust_remote_code)
    train_rows, train_fit = fit_rows(train_rows, tokenizer, config.dpo.max_length)
    eval_rows, eval_fit = fit_rows(eval_rows, tokenizer, config.dpo.max_length)
    if not train_rows:
        from agir_retrain.tasks.errors import DatasetError

        raise DatasetError(
            f"{files.train}: no row fits dpo.max_length={config.dpo.max_length} tokens "
            f"({train_fit.rows_dropped} dropped, e.g. {train_fit.dropped_examples}); raise max_length"
        )

    # 2. The policy: 4-bit NF4 base prepared for k-bit training, LoRA on every linear layer.
    model = load_base(base, quantize=config.quantize, trust_remote_code=config.trust_remote_code)
    checkpointing = config.dpo.gradient_checkpointing
    if config.quantize and not use_fsdp():
        model = prepare_model_for_kbit_training(
            model,
            use_gradient_checkpointing=checkpointing,
            gradient_checkpointing_kwargs={"use_reentrant": False},
        )
        checkpointing = False  # enabled by prepare_model_for_kbit_training
    targets = config.lora.target_modules or lora_targets(model)
    peft_config = LoraConfig(
        r=config.lora.r,
        lora_alpha=config.lora.alpha,
        lora_dropout=config.lora.dropout,
        target_modules=targets,
        task_type="CAUSAL_LM",
    )
    # 3. The reference: the base with the adapter disabled, unless a separate copy is asked for.
    ref_model = None
    if config.reference == "separate":
        ref_model = load_base(
            base, quantize=config.quantize, trust_remote_code=config.trust_remote_code
        )

    on_gpu = torch.cuda.is_available()
    args = DPOConfig(
        output_dir=config.out,
        beta=config.dpo.beta,
        learning_rate=config.dpo.learning_rate,
        num_train_epochs=config.dpo.epochs,
        max_steps=config.dpo.max_steps or -1,
        per_device_train_batch_size=config.dpo.batch_size,
        per_device_eval_batch_size=config.dpo.batch_size,
        gradient_accumulation_steps=config.dpo.gradient_accumulation,
        max_length=config.dpo.max_length,
        truncation_mode=config.dpo.truncation_mode,
        loss_type=config.dpo.loss_types,
        loss_weights=config.dpo.loss_weights,
        precompute_ref_log_probs=config.reference == "precomputed",
        gradient_checkpointing=checkpointing,
        gradient_checkpointing_kwargs={"use_reentrant": False},
        seed=config.dpo.seed,
        data_seed=config.dpo.seed,
        logging_steps=config.dpo.logging_steps,
        eval_strategy="steps" if config.dpo.eval_steps and eval_rows else "no",
        eval_steps=config.dpo.eval_steps,
        save_strategy="steps",
        save_steps=config.dpo.save_steps,
        save_total_limit=config.dpo.save_total_limit,
        report_to="none",
        use_cpu=not on_gpu,
        bf16=compute_dtype() == torch.bfloat16,
        ddp_find_unused_parameters=False,
    )
    trainer = DPOTrainer(
        model=model,
        ref_model=ref_model,
        args=args,
        train_dataset=_dataset(train_rows),
        eval_dataset=_dataset(eval_rows) if eval_rows else None,
        processing_class=tokenizer,
        peft_config=peft_config,
    )
    # TRL drops a row whose prompt alone fills max_length; fitted rows never do, but count anyway.
    trl_dropped = len(train_rows) - len(trainer.train_dataset)
    return Prepared(
        config=config,
        trainer=trainer,
        tokenizer=tokenizer,
        base_model=base,
        files=files,
        eval_rows=eval_rows,
        train_fit=train_fit,
        eval_fit=eval_fit,
        targets=targets,
        trl_dropped=trl_dropped,
    )


def run(prepared: Prepared) -> TrainResult:
    """Train, evaluate (overall and by provenance), save, and write the run's outputs."""
    from accelerate.logging import get_logger

    from agir_retrain.tasks.training.model import parameter_counts
    from agir_retrain.tasks.training.outputs import write_outputs

    log = get_logger(__name__)
    config, trainer, eval_rows = prepared.config, prepared.trainer, prepared.eval_rows
    counts = parameter_counts(trainer.model)
    log.info(
        "LoRA on %s: %d of %d parameters trainable (%.3f%%); reference: %s",
        prepared.targets, counts.trainable, counts.total, counts.trainable_percent, config.reference,
        main_process_only=True,
    )  # fmt: skip

    # 4. Train, resuming from the last checkpoint if asked and one exists.
    resume_from = last_complete_checkpoint(config.out) if config.resume else None
    if config.resume and resume_from is None:
        log.info("no checkpoint in %s: starting from scratch", config.out, main_process_only=True)
    train_output = trainer.train(resume_from_checkpoint=resume_from)

    # 5. Evaluate: overall, and split by how the rejected side was made.
    evaluation: dict[str, dict[str, float]] = {}
    if eval_rows:
        evaluation["overall"] = _clean(trainer.evaluate(), "eval") | {"rows": len(eval_rows)}
    history = list(trainer.state.log_history)  # curves: training and the scheduled evaluations
    for name, garbled in (("garbled", True), ("natural", False)):
        subset = [row for row in eval_rows if row.get("garbled") is garbled]
        if subset:
            result = trainer.evaluate(
                eval_dataset=_dataset(subset), metric_key_prefix=f"eval_{name}"
            )
            evaluation[name] = _clean(result, f"eval_{name}") | {"rows": len(subset)}

    # 6. Save the adapter and tokenizer; write metrics, curves and the model card.
    trainer.save_model(config.out)
    metrics: dict[str, Any] = {}
    if trainer.is_world_process_zero():
        prepared.tokenizer.save_pretrained(config.out)
        metrics = write_outputs(
            config=config,
            base_model=prepared.base_model,
            out=Path(config.out),
            train_metrics=train_output.metrics
            | _peak_memory()
            | {"global_step": trainer.state.global_step},
            evaluation=evaluation,
            log_history=history,
            parameters=asdict(counts)
            | {"trainable_percent": counts.trainable_percent, "lora_targets": prepared.targets},
            data=_data_summary(
                prepared.files.train,
                prepared.files.eval,
                prepared.train_fit,
                prepared.eval_fit,
                prepared.trl_dropped,
            ),
            resumed_from=resume_from,
            world_size=trainer.args.world_size,
        )
        if config.merge:
            from agir_retrain.tasks.training.model import merge_adapter

            merge_adapter(
                prepared.base_model,
                config.out,
                Path(config.out) / "merged",
                trust_remote_code=config.trust_remote_code,
            )
    trainer.accelerator.wait_for_everyone()
    return TrainResult(out=config.out, metrics=metrics)


def _peak_memory() -> dict[str, int]:
    """Peak GPU memory this process allocated, where there is a GPU."""
    import torch

    if not torch.cuda.is_available():
        return {}
    return {"peak_gpu_memory_bytes": torch.cuda.max_memory_allocated()}


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


def _clean(metrics: dict[str, float], prefix: str) -> dict[str, float]:
    """Strip TRL's key prefixes (it keeps ``eval_`` on reward metrics whatever the prefix)."""
    return {
        key.removeprefix(f"{prefix}_").removeprefix("eval_"): value
        for key, value in metrics.items()
        if key != "epoch"
    }


def _data_summary(
    train: str, evaluation: str | None, train_fit: FitStats, eval_fit: FitStats, trl_dropped: int
) -> dict[str, Any]:
    return {
        "train_file": train,
        "eval_file": evaluation,
        "train": {k: v for k, v in asdict(train_fit).items() if k != "dropped_examples"}
        | {"dropped_by_trl": trl_dropped},
        "eval": {k: v for k, v in asdict(eval_fit).items() if k != "dropped_examples"},
    }


def make_parser() -> argparse.ArgumentParser:
    """Flags for the common settings; ``--set key=value`` reaches every other one."""
    parser = argparse.ArgumentParser(
        prog="python -m agir_retrain.tasks.training", description=__doc__.splitlines()[0]
    )
    parser.add_argument("--config", help="YAML file of TrainConfig settings")
    parser.add_argument("--dataset", help="dataset folder or JSONL file")
    parser.add_argument("--eval-dataset", help="eval JSONL file")
    parser.add_argument("--base-model", help="base model: local folder, hub id or builtin:tiny")
    parser.add_argument("--out", help="output folder")
    parser.add_argument(
        "--set",
        action="append",
        default=[],
        metavar="KEY=VALUE",
        help="any setting, e.g. dpo.beta=0.2",
    )
    return parser


def parse(argv: list[str]) -> TrainConfig:
    """Resolve a TrainConfig from command-line arguments (file < environment < flags)."""
    import yaml

    args = make_parser().parse_args(argv)
    flags: dict[str, Any] = {
        "dataset": args.dataset,
        "eval_dataset": args.eval_dataset,
        "base_model": args.base_model,
        "out": args.out,
    }
    for pair in args.set:
        key, sep, raw = pair.partition("=")
        if not sep:
            raise SystemExit(f"--set takes key=value, got {pair!r}")
        flags[key.strip()] = yaml.safe_load(raw) if raw else raw
    return load_config(TrainConfig, args.config, flags).config
