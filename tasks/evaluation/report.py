"""An evaluation's outputs: ``episodes.parquet``, ``eval.json``, ``eval.md`` and ``eval.png``.

Each file is written atomically. The plot shows each model's pass@1 and mean freed
share with their intervals; ``rendering.markdown_image`` embeds it where a page must carry
its images inline (a Prefect artifact is served over http, so a file:// image is broken).
"""

from __future__ import annotations

import io
import logging
from collections.abc import Sequence

import polars as pl

from agir_retrain.tasks.environment.contract import EPISODE_SCHEMA, Episode, StoppedBy
from agir_retrain.tasks.evaluation.eval_json import report_json
from agir_retrain.tasks.evaluation.metrics import EvalReport, report_markdown
from agir_retrain.tasks.filenames import EPISODES_FILE, EVAL_JSON, EVAL_MD, EVAL_PNG
from agir_retrain.tasks.io import atomic_output, join, write_bytes_atomic, write_json_atomic

log = logging.getLogger(__name__)


def episodes_frame(episodes: Sequence[Episode]) -> pl.DataFrame:
    """Episodes as a frame with ``EPISODE_SCHEMA`` (an empty list gives an empty frame)."""
    columns: dict[str, list] = {name: [] for name in EPISODE_SCHEMA.names()}
    for episode in episodes:
        for name in columns:
            value = getattr(episode, name)
            if isinstance(value, StoppedBy):
                value = value.value
            elif isinstance(value, tuple):
                value = list(value)
            columns[name].append(value)
    return pl.DataFrame(columns, schema=EPISODE_SCHEMA)


def write_episodes(path: str, episodes: Sequence[Episode]) -> pl.DataFrame:
    """Write ``episodes.parquet`` atomically; returns the frame written."""
    frame = episodes_frame(episodes)
    with atomic_output(path) as staged:
        frame.write_parquet(staged, compression="zstd")
    return frame


def read_episodes(path: str) -> pl.DataFrame:
    """Read an ``episodes.parquet``, checking its schema."""
    frame = pl.read_parquet(path)
    if frame.schema != EPISODE_SCHEMA:
        raise ValueError(f"{path}: schema {dict(frame.schema)} is not EPISODE_SCHEMA")
    return frame


def plot_png(report: EvalReport) -> bytes:
    """A PNG of each model's pass@1 and mean freed share, with their intervals."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    labels = [m.model for m in report.models]
    panels = (("pass_at_1", "pass@1"), ("mean_freed_share", "mean freed share"))
    fig, axes = plt.subplots(1, 2, figsize=(4 + 1.2 * len(labels), 3.6), dpi=100)
    for ax, (name, title) in zip(axes, panels, strict=True):
        values = [getattr(m, name) for m in report.models]
        points = [v.value for v in values]
        errors = [
            [max(0.0, v.value - v.ci_low) for v in values],
            [max(0.0, v.ci_high - v.value) for v in values],
        ]
        ax.bar(labels, points, yerr=errors, capsize=6, color="#4c72b0")
        ax.set_title(title)
        ax.set_ylim(0, max(1.0, *(v.ci_high for v in values)) * 1.05)
        ax.tick_params(axis="x", labelrotation=20)
        for x, point in enumerate(points):
            ax.annotate(f"{point:.3f}", (x, point), ha="center", va="bottom", fontsize=8)
    pct = round(100 * report.confidence)
    fig.suptitle(f"{pct}% bootstrap intervals over tasks", fontsize=9)
    fig.tight_layout()
    buffer = io.BytesIO()
    # No metadata: the same report gives the same bytes.
    fig.savefig(buffer, format="png", metadata={"Software": None})
    plt.close(fig)
    return buffer.getvalue()


def write_report(out: str, episodes: Sequence[Episode], report: EvalReport) -> bytes:
    """Write the episodes table, eval.json, eval.md and eval.png under ``out``; returns the PNG."""
    write_episodes(join(out, EPISODES_FILE), episodes)
    write_json_atomic(join(out, EVAL_JSON), report_json(report))
    png = plot_png(report)
    write_bytes_atomic(join(out, EVAL_PNG), png)
    markdown = report_markdown(report) + f"\n\n![pass@1 and freed share]({EVAL_PNG})\n"
    write_bytes_atomic(join(out, EVAL_MD), markdown.encode())
    log.info("evaluation written to %s", out)
    return png
