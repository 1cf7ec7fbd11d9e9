"""Run the episode harness as an unprivileged user, the GRPO job's case, from any checkout.

The GRPO job in the GPU image runs as uid 1000, so the harness there is not root: it can
make no cgroup, and a folder its program shuts is shut to it too. Tests play that case with
a server started as uid 1000 under Debian's ``/usr/bin/python3`` (the venv's interpreter may
sit under root's home, which others cannot enter). What that user needs is staged in a
world-readable folder first: the project's ``tasks`` package and the third-party modules
the environment imports, copied from this venv, so the tests pass wherever the checkout
lives (a fresh clone in a folder only root can enter included).
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
import tempfile
from pathlib import Path
from typing import Any

import agir_retrain.tasks

UID = 1000  # the GPU image's `agir` user, which GRPO's episodes run as there
SYSTEM_PYTHON = "/usr/bin/python3"
# What the harness imports, so the third-party modules among them are staged
IMPORTS = (
    "agir_retrain.tasks.environment.episode, agir_retrain.tasks.environment.sandbox_bwrap, "
    "agir_retrain.tasks.environment.scenario, agir_retrain.tasks.settings.environment, pyseccomp"
)

SERVER = r"""
import concurrent.futures, dataclasses, json, sys
from agir_retrain.tasks.environment.episode import run_episode, sandbox_for
from agir_retrain.tasks.environment.scenario import parse_scenario
from agir_retrain.tasks.settings.environment import EnvironmentSettings


def episode(request):
    found = run_episode(
        task_id="t", model="m", sample=request.get("sample", 0),
        completion=f"```python\n{request['program']}\n```",
        scenario=parse_scenario(request["scenario"], "request"),
        settings=EnvironmentSettings(**request["settings"]),
    )
    row = dataclasses.asdict(found)
    row["stopped_by"] = None if found.stopped_by is None else found.stopped_by.value
    return row


def answer(request):
    if request["op"] == "episode":
        return episode(request)
    if request["op"] == "episodes":  # at once, one thread each: neighbours
        with concurrent.futures.ThreadPoolExecutor(len(request["episodes"])) as pool:
            return list(pool.map(episode, request["episodes"]))
    if request["op"] == "sandbox":
        sandbox = sandbox_for(EnvironmentSettings(**request["settings"]))
        return {"pids": sandbox.pids is not None, "memory": sandbox.memory is not None,
                "nproc": sandbox.nproc}
    raise ValueError(request["op"])


for line in sys.stdin:
    try:
        reply = {"ok": answer(json.loads(line))}
    except Exception as exc:  # the test sees the harness's own error
        reply = {"error": f"{type(exc).__name__}: {exc}"}
    print(json.dumps(reply), flush=True)
"""


class UnprivilegedHarness:
    """A harness process running as ``UID``; each request runs episodes there."""

    def __init__(self, stage: Path, work_dir: Path) -> None:
        self.work_dir = work_dir
        self.process = subprocess.Popen(
            ["setpriv", f"--reuid={UID}", f"--regid={UID}", "--clear-groups",
             SYSTEM_PYTHON, "-u", str(stage / "server.py")],
            stdin=subprocess.PIPE, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
            cwd="/", env={"PYTHONPATH": str(stage / "site"), "HOME": str(work_dir),
                          "PATH": "/usr/bin:/bin:/usr/sbin:/sbin"},
        )  # fmt: skip

    def request(self, **request: Any) -> Any:
        """Send one request; its answer (raises with the harness's error)."""
        assert self.process.stdin is not None
        assert self.process.stdout is not None
        self.process.stdin.write(json.dumps(request) + "\n")
        self.process.stdin.flush()
        line = self.process.stdout.readline()
        if not line:
            assert self.process.stderr is not None
            raise RuntimeError(
                f"the unprivileged harness died: {self.process.stderr.read()[-2000:]}"
            )
        reply = json.loads(line)
        if "error" in reply:
            raise RuntimeError(reply["error"])
        return reply["ok"]

    def close(self) -> None:
        """Stop the harness (bounded)."""
        if self.process.stdin is not None:
            self.process.stdin.close()
        try:
            self.process.wait(timeout=30)
        except subprocess.TimeoutExpired:
            self.process.kill()
            self.process.wait(timeout=30)


def unprivileged_problem() -> str | None:
    """Why the unprivileged harness cannot run here (None: it can)."""
    if os.geteuid() != 0:
        return "starting a harness as another user needs root"
    if shutil.which("setpriv") is None:
        return "setpriv (util-linux) is missing"
    if not os.access(SYSTEM_PYTHON, os.X_OK):
        return f"{SYSTEM_PYTHON} is missing (apt-get install python3)"
    version = subprocess.run(
        [SYSTEM_PYTHON, "-c", "import sys; print(sys.version_info[:2])"],
        capture_output=True, text=True, check=False, timeout=60,
    ).stdout.strip()  # fmt: skip
    if version != str(tuple(sys.version_info[:2])):
        return f"{SYSTEM_PYTHON} is Python {version}, not this venv's (its wheels would not load)"
    return None


def stage() -> Path:
    """A world-readable folder holding what the harness imports; the caller removes it."""
    folder = Path(tempfile.mkdtemp(prefix="agir-unprivileged-"))
    site = folder / "site"
    source = Path(agir_retrain.tasks.__path__[0])
    ignore = shutil.ignore_patterns("__pycache__", "*.pyc")
    shutil.copytree(source, site / "agir_retrain" / "tasks", ignore=ignore)
    listed = subprocess.run(
        [sys.executable, "-c", f"import sys, {IMPORTS}; print('\\n'.join(m.__file__ or '' "
         "for m in list(sys.modules.values()) if getattr(m, '__file__', None)))"],
        capture_output=True, text=True, check=True, timeout=120,
    ).stdout.split()  # fmt: skip
    tops: set[Path] = set()  # each third-party module's top folder (or file) in its site-packages
    for name in listed:
        parts = Path(name).parts
        if "site-packages" not in parts:
            continue  # the standard library (the system Python has its own) or the project
        at = len(parts) - 1 - parts[::-1].index("site-packages")
        top = parts[at + 1]
        if top.startswith("__editable__") or top == "agir_retrain":
            continue
        tops.add(Path(*parts[: at + 2]))
    for path in sorted(tops):
        if path.is_dir():
            shutil.copytree(path, site / path.name, ignore=ignore, dirs_exist_ok=True)
        else:
            shutil.copy2(path, site / path.name)
    (folder / "server.py").write_text(SERVER)
    for path in [folder, *folder.rglob("*")]:
        path.chmod(0o755 if path.is_dir() else 0o644)
    work = folder / "work"
    work.mkdir(mode=0o700)
    os.chown(work, UID, UID)
    return folder
