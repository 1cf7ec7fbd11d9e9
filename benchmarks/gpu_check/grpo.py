"""Part 5: GRPO steps with the environment's reward, where bubblewrap runs.

The sandbox is probed first (``bwrap --version`` and a trial program in a bare tree), so
the figures say whether episodes could run on this machine at all. GRPO itself lives in
``tasks/training/grpo.py`` (issue 14); until that module is in the tree, the part says
"not available" instead of failing.
"""

from __future__ import annotations

import importlib
import importlib.util
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

from benchmarks.gpu_check.common import Plan, Results

GRPO_MODULE = "agir_retrain.tasks.training.grpo"


def probe_bwrap() -> dict[str, Any]:
    """Whether bubblewrap is installed and can run a program in a bare tree without network."""
    path = shutil.which("bwrap")
    if path is None:
        return {"bwrap": None, "runs": False, "reason": "bwrap is not installed on this machine"}
    # Only /usr is bound into the sandbox: the trial needs a Python from there.
    python = next((c for c in (sys.executable, "/usr/bin/python3") if c.startswith("/usr/") and Path(c).exists()), None)  # fmt: skip
    version = subprocess.run(
        [path, "--version"], capture_output=True, text=True, timeout=10, check=False
    )
    with tempfile.TemporaryDirectory() as scratch:
        (Path(scratch) / "victim.txt").write_text("x")
        program = (
            "import os, socket\n"
            "os.remove('/var/victim.txt')\n"
            "try:\n    socket.create_connection(('1.1.1.1', 53), timeout=1); print('net')\n"
            "except OSError:\n    print('no-net')\n"
        )
        command = [
            path, "--unshare-all", "--die-with-parent", "--ro-bind", "/usr", "/usr",
            "--symlink", "usr/lib", "/lib", "--symlink", "usr/lib64", "/lib64",
            "--symlink", "usr/bin", "/bin", "--proc", "/proc", "--dev", "/dev", "--tmpfs", "/tmp",
            "--bind", scratch, "/var", python or "/usr/bin/python3", "-c", program,
        ]  # fmt: skip
        started = time.perf_counter()
        trial = subprocess.run(command, capture_output=True, text=True, timeout=30, check=False)
        wall = time.perf_counter() - started
        deleted = not (Path(scratch) / "victim.txt").exists()
    runs = trial.returncode == 0 and deleted and trial.stdout.strip() == "no-net"
    row: dict[str, Any] = {
        "bwrap": path,
        "version": version.stdout.strip() or version.stderr.strip(),
        "runs": runs,
        "trial_s": round(wall, 3),
    }
    if python is None:
        row["reason"] = (
            f"no Python under /usr to run in the sandbox ({sys.executable} is elsewhere)"
        )
    elif not runs:
        row["reason"] = (
            f"trial exited {trial.returncode}, deleted={deleted}, "
            f"stdout={trial.stdout.strip()!r}, stderr={trial.stderr.strip()[-300:]!r}"
        )
    return row


def run_grpo(plan: Plan, results: Results) -> None:
    """Probe the sandbox, then run GRPO steps if the program has them."""
    with results.attempt("sandbox") as row:
        row.update(probe_bwrap())
    if importlib.util.find_spec(GRPO_MODULE) is None:
        results.add(
            kind="grpo",
            status="not_available",
            reason=f"{GRPO_MODULE} is not in this tree yet (issue 14): no GRPO steps to measure",
        )
        return
    with results.attempt("grpo_import") as row:
        importlib.import_module(GRPO_MODULE)  # it must import where the check runs
        row["imports"] = True
    results.add(
        kind="grpo",
        status="not_wired",
        reason=f"{GRPO_MODULE} exists and imports, but this check does not drive its steps yet: "
        "add them in benchmarks/gpu_check/grpo.py",
    )
