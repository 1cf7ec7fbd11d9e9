"""What a training run leaves beside its adapter: metrics, curves, the resolved config, a model card."""

from __future__ import annotations

import logging
from pathlib import Path
from typing import Any

import orjson
import yaml

from agir_retrain.tasks.io import write_bytes_atomic, write_json_atomic
from agir_retrain.tasks.settings.models import TrainConfig

log = logging.getLogger(__name__)

METRICS_FILE = "metrics.json"
CONFIG_FILE = "train_config.yaml"
CURVES = {
    "loss.png": ("loss", "eval_loss", "DPO loss"),
    "reward_accuracy.png": ("rewards/accuracies", "eval_rewards/accuracies", "reward accuracy"),
    "reward_margin.png": ("rewards/margins", "eval_rewards/margins", "reward margin"),
}


def write_config(config: TrainConfig, path: Path) -> Path:
    """Write the resolved settings as YAML: the container trains from exactly this file."""
    text = yaml.safe_dump(config.model_dump(mode="json"), sort_keys=False)
    write_bytes_atomic(str(path), text.encode())
    return path


def write_outputs(
    *,
    config: TrainConfig,
    base_model: str,
    out: Path,
    train_metrics: dict[str, float],
    evaluation: dict[str, dict[str, float]],
    log_history: list[dict[str, Any]],
    parameters: dict[str, Any],
    data: dict[str, Any],
    resumed_from: str | None,
    world_size: int,
) -> dict[str, Any]:
    """Write metrics.json, the curves, train_config.yaml and README.md; return the metrics."""
    metrics = {
        "base_model": base_model,
        "reference": config.reference,
        "quantized": config.quantize,
        "world_size": world_size,
        "resumed_from_checkpoint": resumed_from,
        "parameters": parameters,
        "data": data,
        "train": train_metrics,
        "evaluation": evaluation,
        "log_history": log_history,
    }
    write_json_atomic(str(out / METRICS_FILE), _finite(metrics))
    write_config(config, out / CONFIG_FILE)
    plots = plot_curves(log_history, out)
    (out / "README.md").write_text(model_card(config, base_model, metrics, plots))
    return metrics


def _finite(value: Any) -> Any:
    """JSON has no NaN or infinity: write them as null."""
    if isinstance(value, float) and (value != value or value in (float("inf"), float("-inf"))):
        return None
    if isinstance(value, dict):
        return {k: _finite(v) for k, v in value.items()}
    if isinstance(value, list):
        return [_finite(v) for v in value]
    return value


def plot_curves(log_history: list[dict[str, Any]], out: Path) -> list[str]:
    """Plot loss, reward accuracy and reward margin against the step; return the PNG names."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    written = []
    for name, (train_key, eval_key, title) in CURVES.items():
        figure, axes = plt.subplots(figsize=(6, 3.5))
        for key, label, style in ((train_key, "train", "-"), (eval_key, "eval", "o--")):
            points = [
                (row["step"], row[key])
                for row in log_history
                if key in row and row[key] is not None
            ]
            if points:
                steps, values = zip(*points, strict=True)
                axes.plot(steps, values, style, label=label)
        axes.set_xlabel("step")
        axes.set_title(title)
        axes.grid(alpha=0.3)
        if axes.lines:
            axes.legend()
        figure.tight_layout()
        figure.savefig(out / name, dpi=100)
        plt.close(figure)
        written.append(name)
    return written


def model_card(
    config: TrainConfig, base_model: str, metrics: dict[str, Any], plots: list[str]
) -> str:
    """A model card: what was trained, on what, with which settings, and how it scored."""
    rows = [
        f"| {split} | {values['rows']} | {values['loss']:.4f} | {values['rewards/accuracies']:.3f} | "
        f"{values['rewards/margins']:.4f} |"
        for split, values in metrics["evaluation"].items()
    ]
    evaluation = (
        "\n".join(
            [
                "| split | rows | loss | reward accuracy | reward margin |",
                "|---|---|---|---|---|",
                *rows,
            ]
        )
        if rows
        else "No eval file was given."
    )
    data = metrics["data"]
    params = metrics["parameters"]
    return f"""---
base_model: {base_model}
library_name: peft
tags: [dpo, qlora, trl, agir-retrain]
---

# DPO adapter for {base_model}

A LoRA adapter trained with TRL's DPO on AGIR preference data by agir-retrain:
base {"in 4-bit NF4 (double quantization)" if config.quantize else "in full precision"},
LoRA r={config.lora.r} alpha={config.lora.alpha} on `{", ".join(params["lora_targets"])}`,
reference: `{config.reference}`, {metrics["world_size"]} process(es).
Trainable parameters: {params["trainable"]:,} of {params["total"]:,} ({params["trainable_percent"]:.3f}%).

## Data

| split | file | rows in | prompts shortened | dropped |
|---|---|---|---|---|
| train | `{data["train_file"]}` | {data["train"]["rows_in"]} | {data["train"]["rows_trimmed"]} | {data["train"]["rows_dropped"] + data["train"]["dropped_by_trl"]} |
| eval | `{data["eval_file"]}` | {data["eval"]["rows_in"]} | {data["eval"]["rows_trimmed"]} | {data["eval"]["rows_dropped"]} |

## Evaluation

{evaluation}

`garbled`: pairs whose rejected side was sampled from the base model; `natural`: pairs
whose rejected side is a failed attempt of the agent (or another run's strategy).

## Training

Final train loss {metrics["train"].get("train_loss", float("nan")):.4f} over {metrics["train"]["global_step"]} steps
in {metrics["train"].get("train_runtime", float("nan")):.1f} s.

{chr(10).join(f"![{name}]({name})" for name in plots)}

## Use

```python
from agir_retrain.tasks.training.model import load_adapter  # agir-retrain

model = load_adapter("{base_model}", "<this folder>", quantize={config.quantize})
```

With peft alone, pass `autocast_adapter_dtype=False` to `PeftModel.from_pretrained`: TRL
keeps QLoRA adapter weights in bf16, and up-casting them changes the logits slightly.

## Settings

```yaml
{yaml.safe_dump(orjson.loads(config.model_dump_json()), sort_keys=False).rstrip()}
```
"""
