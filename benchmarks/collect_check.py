"""Check a collection against the reader and the evaluator (issue 21's "done when", recorded).

    .venv/bin/python benchmarks/collect_check.py gen-1/collect [--workers 2]

1. Every run file is read by the project's reader: runs counted, nothing may be
   quarantined, and the runs' classes must equal the collection's report.
2. Every code attempt that ran is judged again from its attempts record, the way
   ``evaluate --tasks T --completions C`` judges it (the same stage functions: tasks bound
   to the scenario state the attempt started from, written as a scenario file, the reply
   as the completion, an episode in the sandbox), and the outcome and bytes freed the
   collection recorded must equal the evaluator's.
Prints one table; exit status 1 when anything differs.
"""

from __future__ import annotations

import argparse
import json
import sys
import tempfile
from collections import Counter
from pathlib import Path

from agir_retrain.tasks.agent.outcomes import judge_episode
from agir_retrain.tasks.environment.contract import Completion, EvalTask
from agir_retrain.tasks.environment.scenario import load_scenario
from agir_retrain.tasks.evaluation.episodes import episode_groups, run_groups_locally
from agir_retrain.tasks.runs.reader import read_run_file
from agir_retrain.tasks.settings.environment import EnvironmentSettings


def read_runs(out: Path) -> tuple[int, int, int, Counter[str]]:
    """Files, runs, quarantined entries, and runs by class, as the reader sees them."""
    files = sorted((out / "runs").rglob("*.json"))
    runs, quarantined, classes = 0, 0, Counter()
    for path in files:
        result = read_run_file(str(path))
        runs += len(result.runs)
        quarantined += len(result.quarantined)
        classes.update(r.run_class.value for r in result.runs)
    return len(files), runs, quarantined, classes


def rejudge(out: Path, workers: int) -> tuple[int, list[str]]:
    """How many attempts that ran were judged again, and every difference found."""
    lines = [
        json.loads(line)
        for path in sorted((out / "attempts").rglob("*.jsonl"))
        for line in path.read_text().splitlines()
    ]
    tasks, completions, recorded = [], [], {}
    with tempfile.TemporaryDirectory(prefix="collect-check-") as scratch:
        for n, line in enumerate(lines):
            if line["outcome"] in ("ast_fail", "compile_fail"):
                continue  # nothing ran: the reply itself is the evidence
            state = Path(scratch, f"state-{n}.json")
            state.write_text(json.dumps(line["scenario"]))
            task_id = f"{line['task_id']}#{line['run_index']}/{line['strategy']}/{line['attempt']}"
            tasks.append(
                EvalTask(task_id=task_id, prompt=tuple(line["prompt"]), scenario=str(state))
            )
            completions.append(
                Completion(task_id=task_id, model="check", sample=0, completion=line["reply"])
            )
            recorded[task_id] = (line["outcome"], line["freed_bytes"])
        scenarios = {t.scenario: load_scenario(t.scenario) for t in tasks}
        episodes = run_groups_locally(
            episode_groups(tasks, completions, scenarios), EnvironmentSettings(), workers
        )
    differences = []
    for episode in episodes:
        judged = judge_episode(episode)
        found = (judged.outcome.value, judged.freed_bytes)
        if found != recorded[episode.task_id]:
            differences.append(
                f"{episode.task_id}: recorded {recorded[episode.task_id]}, evaluated {found}"
            )
    return len(episodes), differences


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("collection", type=Path, help="a collect output folder")
    parser.add_argument("--workers", type=int, default=2)
    args = parser.parse_args()
    report = json.loads((args.collection / "collect_report.json").read_text())
    files, runs, quarantined, classes = read_runs(args.collection)
    expected = {k: v for k, v in report["runs_by_class"].items() if v}
    checked, differences = rejudge(args.collection, args.workers)
    rows = [
        ("model", report["model_name"]),
        ("run files / runs read", f"{files} / {runs}"),
        ("quarantined by the reader", str(quarantined)),
        ("runs by class (reader)", json.dumps(dict(sorted(classes.items())))),
        ("runs by class (collect report)", json.dumps(dict(sorted(expected.items())))),
        ("attempts that ran, judged again", str(checked)),
        ("outcome or bytes differing", str(len(differences))),
    ]
    width = max(len(what) for what, _ in rows)
    for what, value in rows:
        print(f"{what:<{width}}  {value}")
    for difference in differences[:20]:
        print("  differs:", difference)
    ok = quarantined == 0 and dict(classes) == expected and not differences
    print("OK" if ok else "MISMATCH")
    return 0 if ok else 1


if __name__ == "__main__":
    sys.exit(main())
