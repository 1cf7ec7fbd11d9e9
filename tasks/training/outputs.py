"""What a training run leaves beside its adapter: metrics, curves, the resolved config, a model card."""

from __future__ import annotations

import json
import logging
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import yaml

from agir_retrain.tasks.filenames import CARD_FILE, CONFIG_FILE, LINEAGE_FILE, METRICS_FILE
from agir_retrain.tasks.io import write_bytes_atomic
from agir_retrain.tasks.lineage import lineage_bytes
from agir_retrain.tasks.objectives import Curve
from agir_retrain.tasks.rendering import markdown_table
from agir_retrain.tasks.settings.generations import Lineage
from agir_retrain.tasks.settings.train import TrainConfig
from agir_retrain.tasks.training.metrics import TrainingMetrics, metrics_bytes, metrics_rows

log = logging.getLogger(__name__)


def write_config(config: TrainConfig, path: Path) -> Path:
    """Write the resolved settings as YAML: the container trains from exactly this file."""
    text = yaml.safe_dump(config.model_dump(mode="json"), sort_keys=False)
    write_bytes_atomic(str(path), text.encode())
    return path


def write_outputs(
    *, config: TrainConfig, metrics: TrainingMetrics, curves: tuple[Curve, ...], out: Path
) -> list[str]:
    """Write metrics.json, the curves, train_config.yaml and README.md; return the plots."""
    write_bytes_atomic(str(out / METRICS_FILE), metrics_bytes(metrics))
    write_config(config, out / CONFIG_FILE)
    if config.lineage is not None:
        write_bytes_atomic(str(out / LINEAGE_FILE), lineage_bytes(config.lineage))
    plots = plot_curves(metrics.log_history, out, curves)
    write_bytes_atomic(str(out / CARD_FILE), model_card(config, metrics, plots).encode())
    return plots


def plot_curves(
    log_history: tuple[Mapping[str, Any], ...] | list[Mapping[str, Any]],
    out: Path,
    curves: tuple[Curve, ...],
) -> list[str]:
    """Plot each curve's training and evaluation series against the step; return the PNGs."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    written = []
    for curve in curves:
        figure, axes = plt.subplots(figsize=(6, 3.5))
        for key, label, style in ((curve.train_key, "train", "-"), (curve.eval_key, "eval", "o--")):
            points = [
                (row["step"], row[key])
                for row in log_history
                if key in row and row[key] is not None
            ]
            if points:
                steps, values = zip(*points, strict=True)
                axes.plot(steps, values, style, label=label)
        axes.set_xlabel("step")
        axes.set_title(curve.title)
        axes.grid(alpha=0.3)
        if axes.lines:
            axes.legend()
        figure.tight_layout()
        # No timestamp in the PNG's metadata: the same run gives the same bytes.
        figure.savefig(out / curve.file, dpi=100, metadata={"Software": None})
        plt.close(figure)
        written.append(curve.file)
    return written


def model_card(config: TrainConfig, metrics: TrainingMetrics, plots: list[str]) -> str:
    """A model card: what was trained, on what, with which settings, and how it scored."""
    params = metrics.parameters
    base = metrics.base_model
    settings = json.loads(config.model_dump_json())
    return f"""---
base_model: {base}
library_name: peft
tags: [{metrics.objective}, qlora, trl, agir-retrain]
---

# {metrics.objective.upper()} adapter for {base}

A LoRA adapter trained with TRL ({metrics.objective}) on AGIR data by agir-retrain:
base {"in 4-bit NF4 (double quantization)" if metrics.quantized else "in full precision"},
LoRA r={config.lora.r} alpha={config.lora.alpha} on `{", ".join(params.lora_targets)}`,
reference: `{metrics.reference}`, {metrics.world_size} process(es).

## Summary

{markdown_table(metrics_rows(metrics))}

Data: `{metrics.data.train_file}` (train), `{metrics.data.eval_file}` (eval).
`garbled`: pairs whose rejected side was sampled from the base model; `natural`: pairs
whose rejected side is a failed attempt of the agent (or another run's strategy).

{chr(10).join(f"![{name}]({name})" for name in plots)}
{lineage_section(config.lineage)}
## Use

```python
from agir_retrain.tasks.training.model import load_adapter  # agir-retrain

model = load_adapter("{base}", "<this folder>", quantize={metrics.quantized})
```

With peft alone, pass `autocast_adapter_dtype=False` to `PeftModel.from_pretrained`: TRL
keeps QLoRA adapter weights in bf16, and up-casting them changes the logits slightly.

## Settings

```yaml
{yaml.safe_dump(settings, sort_keys=False).rstrip()}
```
"""


def lineage_section(lineage: Lineage | None) -> str:
    """The model card's account of the generations the adapter learnt from (empty for one dataset)."""
    if lineage is None:
        return ""
    rows = []
    for record in lineage.generations:
        producer = record.producer
        evaluation = producer.evaluation if producer else None
        rows.append(
            (
                str(record.generation),
                f"`{record.dataset}`",
                "yes" if record.selected else "no",
                f"`{producer.adapter}`"
                if producer and producer.adapter
                else ("base" if producer else "not recorded"),
                f"{getattr(evaluation, lineage.rank_by):.3f}" if evaluation else "-",
                str(sum(record.rows.values())),
            )
        )
    table = markdown_table(
        rows,
        headers=(
            "generation",
            "dataset",
            "in window",
            "collected by",
            lineage.rank_by,
            "rows taken",
        ),
    )
    return (
        f"\n## Lineage\n\nA fresh adapter on the base, trained on the window `{lineage.window}` "
        f"of {len(rows)} generation(s), combined in `{lineage.dataset}` "
        f"({lineage.duplicate_rows_dropped} rows already taken from an earlier generation and "
        f"{lineage.eval_rows_in_train_dropped} eval rows of runs trained on were dropped). Each "
        f"dataset's runs were collected by the model named; `{LINEAGE_FILE}` holds the whole "
        f"chain.\n\n{table}\n"
    )
