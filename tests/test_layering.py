"""The house's picture stays true: no stage imports a later one, only the edges import
Prefect or Ray, and every Prefect task is declared at the edge (docs/architecture.md).
Imports are read from the source (lazy ones included), so a shortcut taken inside a
function is caught too.
"""

from __future__ import annotations

import ast
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
TASKS = ROOT / "tasks"

# What each stage may import besides the foundations (tasks/*.py and tasks/settings/).
# Foundations import no stage; the edges (prefect_tasks, ray_pool) may import any stage.
ALLOWED_STAGES: dict[str, set[str]] = {
    "synth": set(),
    # Resolving, loading and sampling base models. builtin:tiny is synth's tiny model (made
    # there: it is synthetic data), so models may reach synth, which imports no stage.
    "models": {"synth"},
    "runs": set(),
    "dataset": {"runs", "models"},
    "environment": set(),
    "evaluation": {"environment", "dataset", "runs", "models"},
    # GRPO binds tasks to scenarios and fans episodes out as evaluation does; compare reads
    # evaluation's metrics.
    "training": {"environment", "evaluation", "synth", "models"},
    # Submitting resolves the base on this machine (a GGUF file is converted here, once).
    "delivery": {"training", "synth", "models"},
    # The agent's loop plays in the environment and samples as evaluation does.
    "agent": {"environment", "evaluation", "models"},
    # Generations chain the stages and read what each left (reports, metrics, evaluations).
    "improve": {"agent", "environment", "evaluation", "dataset", "runs", "training", "models"},
}
EDGES = {"prefect_tasks", "ray_pool"}
# Episodes fan out on Ray or local processes through one chooser (evaluation/episodes.py),
# which the training program also uses outside any flow (under accelerate, for an execution
# reward): those two stages reach Ray through the edge itself; no other stage may.
STAGES_USING_EDGES = {"training": {"ray_pool"}, "evaluation": {"ray_pool"}}
ORCHESTRATORS = {"prefect", "prefect_ray", "ray"}


def _module_name(path: Path) -> str:
    parts = path.relative_to(ROOT).with_suffix("").parts
    return ".".join(("agir_retrain", *parts)).removesuffix(".__init__")


def _imports(path: Path) -> set[str]:
    """Every module a file imports, lazy and TYPE_CHECKING imports included."""
    found: set[str] = set()
    for node in ast.walk(ast.parse(path.read_text(), filename=str(path))):
        if isinstance(node, ast.Import):
            found.update(alias.name for alias in node.names)
        elif isinstance(node, ast.ImportFrom) and node.module and node.level == 0:
            found.add(node.module)
            found.update(f"{node.module}.{alias.name}" for alias in node.names)
    return found


def _place(module: str) -> str | None:
    """Where a module of ours sits: a stage name, 'foundation', 'edge', 'flows', or None."""
    parts = module.split(".")
    if parts[:2] == ["agir_retrain", "flows"]:
        return "flows"
    if parts[:2] != ["agir_retrain", "tasks"] or len(parts) < 3:
        return None
    name = parts[2]
    if name in EDGES:
        return "edge"
    if name in ALLOWED_STAGES:
        return name
    return "foundation"  # tasks/<module>.py and tasks/settings/


def _task_modules() -> list[Path]:
    return sorted(p for p in TASKS.rglob("*.py") if "__pycache__" not in p.parts)


@pytest.mark.parametrize("path", _task_modules(), ids=lambda p: str(p.relative_to(ROOT)))
def test_stage_imports_only_earlier_stages(path: Path) -> None:
    here = _place(_module_name(path))
    allowed = {"foundation"} | ALLOWED_STAGES.get(here or "", set())
    if here in ALLOWED_STAGES:
        allowed.add(here)
    bad = []
    for imported in _imports(path):
        there = _place(imported)
        if there is None or here == "edge":
            continue
        if there == "edge":
            edge = imported.split(".")[2]
            if edge not in STAGES_USING_EDGES.get(here or "", set()):
                bad.append(f"{imported} (edge)")
        elif there == "flows" or there not in allowed:
            bad.append(f"{imported} ({there})")
    assert not bad, f"{here} module imports what its layer may not: {sorted(set(bad))}"


@pytest.mark.parametrize("path", _task_modules(), ids=lambda p: str(p.relative_to(ROOT)))
def test_only_the_edges_import_prefect_or_ray(path: Path) -> None:
    if path.stem in EDGES and path.parent == TASKS:
        return
    orchestration = {m for m in _imports(path) if m.split(".")[0] in ORCHESTRATORS}
    assert not orchestration, f"only prefect_tasks.py and ray_pool.py may import {orchestration}"


@pytest.mark.parametrize(
    "path", sorted((ROOT / "flows").glob("*.py")), ids=lambda p: str(p.relative_to(ROOT))
)
def test_flows_declare_no_prefect_task(path: Path) -> None:
    """Every Prefect task is declared in tasks/prefect_tasks.py, around a plain function."""
    declared = {m for m in _imports(path) if m in {"prefect.task", "prefect.tasks.task"}}
    assert not declared, f"declare the task in tasks/prefect_tasks.py, not here: {declared}"


def test_the_checks_catch_a_violation(tmp_path: Path) -> None:
    """The rules are not vacuous: a runs module importing a later stage or Prefect is caught."""
    assert _place("agir_retrain.tasks.dataset.build") not in {"foundation", "runs"}
    assert _place("agir_retrain.tasks.records") == "foundation"
    assert _place("agir_retrain.tasks.ray_pool") == "edge"
    probe = tmp_path / "probe.py"
    probe.write_text(
        "def f():\n    import prefect\n    from agir_retrain.tasks.dataset import build\n"
        "    from prefect import task\n"
    )
    assert {"prefect", "agir_retrain.tasks.dataset", "prefect.task"} <= _imports(probe)


def test_no_module_passes_the_size_limit() -> None:
    """Modules stay small enough to read in one sitting (~400 lines; 450 is the hard stop)."""
    sizes = {
        str(p.relative_to(ROOT)): len(p.read_text().splitlines())
        for p in [*_task_modules(), *sorted((ROOT / "flows").glob("*.py"))]
    }
    too_long = {name: lines for name, lines in sizes.items() if lines > 450}
    assert not too_long, f"split these modules: {too_long}"
