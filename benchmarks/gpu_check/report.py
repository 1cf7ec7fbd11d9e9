"""The check's summary ratios and its one table."""

from __future__ import annotations

from typing import Any

TARGET_ADAPTER_VS_SEPARATE = 0.6
_LABELS = (
    "kind",
    "quantize",
    "mode",
    "max_length",
    "short",
    "layers",
    "generation",
    "status",
    "reason",
    "wall_s",
)


def _ratio(a: float | None, b: float | None) -> float | None:
    return round(a / b, 3) if a is not None and b else None


def _dpo(parts: dict[str, Any], name: str) -> dict[tuple[str, int], dict[str, Any]]:
    rows = parts.get(name, {}).get("rows", [])
    return {(r["mode"], r["max_length"]): r for r in rows if r.get("kind") == "dpo" and r["status"] == "ok"}  # fmt: skip


def summarise(parts: dict[str, Any]) -> dict[str, Any]:
    """The ratios the claims rest on, from whatever rows were measured."""
    four, bf16 = _dpo(parts, "qlora_dpo"), _dpo(parts, "lora_dpo")
    summary: dict[str, Any] = {"adapter_vs_separate_memory": {}, "precomputed_vs_separate_memory": {},
                               "adapter_vs_separate_tokens_per_s": {}, "qlora_vs_lora_memory": {}}  # fmt: skip
    for (mode, length), row in four.items():
        separate = four.get(("separate", length))
        if separate and mode in ("adapter", "precomputed"):
            key = f"{mode}_vs_separate_memory"
            summary[key][str(length)] = _ratio(
                row["run_peak_gpu_memory_gb"], separate["run_peak_gpu_memory_gb"]
            )
            if mode == "adapter":
                summary["adapter_vs_separate_tokens_per_s"][str(length)] = _ratio(row["tokens_per_s"], separate["tokens_per_s"])  # fmt: skip
        if (mode, length) in bf16:
            summary["qlora_vs_lora_memory"][f"{mode}/{length}"] = _ratio(row["run_peak_gpu_memory_gb"], bf16[(mode, length)]["run_peak_gpu_memory_gb"])  # fmt: skip
    ratios = [v for v in summary["adapter_vs_separate_memory"].values() if v is not None]
    summary["adapter_vs_separate_target"] = TARGET_ADAPTER_VS_SEPARATE
    summary["adapter_vs_separate_met"] = all(v <= TARGET_ADAPTER_VS_SEPARATE for v in ratios) if ratios else None  # fmt: skip
    summary["sampler_vs_single"] = {
        ("4bit" if r["quantize"] else "bf16"): r["sampler_vs_single"]
        for r in parts.get("sampling", {}).get("rows", [])
        if r.get("kind") == "sampling" and r["status"] == "ok"
    }
    summary["improve"] = _improve(parts)
    summary["parts"] = {name: part["status"] for name, part in parts.items()}
    return summary


# The improve part's headline figures: (its row's kind, the figure), by the summary's name.
_IMPROVE_FIGURES = {
    "train_tokens_per_s": ("improve_train", "tokens_per_s"),
    "train_seconds_per_step": ("improve_train", "seconds_per_step"),
    "train_peak_gpu_memory_gb": ("improve_train", "peak_gpu_memory_gb"),
    "collect_sampling_tokens_per_s": ("improve_collect", "sampling_tokens_per_s"),
    "collect_replies_per_s": ("improve_collect", "replies_per_s"),
    "collect_waves": ("improve_collect", "waves"),
    "collect_episodes_per_s": ("improve_collect", "episodes_per_s"),
    "reference_episodes_per_s": ("improve_reference", "episodes_per_s"),
    "heldout_adapter_vs_base_tokens_per_s": ("improve_heldout", "adapter_vs_base_tokens_per_s"),
}


def _improve(parts: dict[str, Any]) -> dict[str, Any]:
    """One generation of the loop: training and generation speed, from the rows measured."""
    rows = {r["kind"]: r for r in parts.get("improve", {}).get("rows", []) if r["status"] == "ok"}
    return {name: rows[kind].get(key) for name, (kind, key) in _IMPROVE_FIGURES.items() if kind in rows}  # fmt: skip


def _figures(row: dict[str, Any]) -> str:
    shown = [f"{k}={v}" for k, v in row.items() if k not in _LABELS and not isinstance(v, dict | list) and k != "folder"]  # fmt: skip
    return ", ".join(shown) if row["status"] == "ok" else str(row.get("reason", ""))


def render_table(report: dict[str, Any]) -> None:
    """Print one table: every measurement of every part, then the summary ratios."""
    from rich.console import Console
    from rich.table import Table

    machine = report["machine"]
    table = Table(title=f"agir-retrain GPU check ({report['mode']}) {report['date']} on {machine.get('gpu') or 'CPU'}",
                  show_lines=True)  # fmt: skip
    for column in ("part", "measurement", "status", "s", "figures"):
        table.add_column(column, overflow="fold")
    for name, part in report["parts"].items():
        if not part["rows"] or part["status"] in ("timed_out", "failed", "skipped"):
            table.add_row(
                name, "(part)", part["status"], str(part.get("wall_s", "")), part.get("reason", "")
            )
        for row in part["rows"]:
            label = " ".join(
                f"{k}={row[k]}"
                for k in ("kind", "quantize", "mode", "max_length", "short", "generation")
                if k in row
            )
            table.add_row(name, label, row["status"], str(row.get("wall_s", "")), _figures(row))
    summary = report.get("summary", {})
    for key, value in summary.items():
        if key != "parts":
            table.add_row("summary", key, "", "", str(value))
    Console(width=160).print(table)
