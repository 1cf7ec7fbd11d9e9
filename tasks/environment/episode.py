"""One episode: extract a completion's program, run it in a fresh scenario copy, measure.

The program is only ever parsed here (``ast.parse``, to tell a bare program from prose);
it runs only inside the sandbox the settings name.
"""

from __future__ import annotations

import ast
import logging
import os
import shutil
import subprocess
import tempfile
import time
from functools import cache
from pathlib import Path

from agir_retrain.tasks.environment.contract import Episode, Scenario
from agir_retrain.tasks.environment.measure import is_success, measure
from agir_retrain.tasks.environment.sandbox import Sandbox, SandboxLimits
from agir_retrain.tasks.environment.scenario import junk_bytes_total, materialise
from agir_retrain.tasks.settings.environment import EnvironmentSettings

log = logging.getLogger(__name__)

FENCE = "```"
_PYTHON_TAGS = {"python", "python3", "py"}
MAX_BARE_CHARS = 100_000
EPISODE_PREFIX = "agir-episode-"  # then the pid of the process that made it  # longer text is not parsed as a bare program


def extract_program(completion: str) -> str | None:
    """The completion's program: its first ```python fence, else the whole text if it is Python.

    A fence without a language counts when its body parses as Python. An unclosed fence
    runs to the end of the text (a completion cut at its token limit). Linear in the text.
    """
    untagged: str | None = None
    position = completion.find(FENCE)
    while position != -1:
        line_end = completion.find("\n", position)
        if line_end == -1:
            break
        tag = completion[position + len(FENCE) : line_end].strip().lower()
        body_start = line_end + 1
        close = _closing_fence(completion, body_start)
        body = completion[body_start:close] if close != -1 else completion[body_start:]
        if tag in _PYTHON_TAGS:
            return body
        if tag == "" and untagged is None and _is_python(body):
            untagged = body
        if close == -1:
            break
        position = completion.find(FENCE, close + len(FENCE))
    if untagged is not None:
        return untagged
    if FENCE not in completion and _is_python(completion):
        return completion
    return None


def _closing_fence(text: str, start: int) -> int:
    """Where the fence closing a body that starts at ``start`` begins (a line opening with ```)."""
    if text.startswith(FENCE, start):
        return start
    found = text.find("\n" + FENCE, start - 1 if start > 0 else 0)
    return found + 1 if found != -1 else -1


def _is_python(text: str) -> bool:
    """True when ``text`` parses as Python and does something: a statement or a call.

    Prose and shell often parse as expressions (``rm -rf /tmp/x`` is a subtraction), so a
    text of bare expressions without a call is not taken for a program.
    """
    if not text.strip() or len(text) > MAX_BARE_CHARS:
        return False
    try:
        tree = ast.parse(text)
    except (SyntaxError, ValueError, RecursionError, MemoryError):
        return False
    return any(
        not isinstance(node, ast.Expr) or any(isinstance(n, ast.Call) for n in ast.walk(node))
        for node in tree.body
    )


def limits_from(settings: EnvironmentSettings) -> SandboxLimits:
    """The sandbox limits a settings section names."""
    limits = settings.limits
    return SandboxLimits(
        wall_s=limits.wall_s,
        memory_mb=limits.memory_mb,
        processes=limits.processes,
        file_size_mb=limits.file_size_mb,
    )


@cache
def make_sandbox(backend: str, interpreter: str, docker_image: str) -> Sandbox:
    """The backend the settings name, checked once per process."""
    if backend == "bwrap":
        from agir_retrain.tasks.environment.sandbox_bwrap import BwrapSandbox

        return BwrapSandbox(interpreter)
    if backend == "docker":
        from agir_retrain.tasks.environment.sandbox_docker import DockerSandbox

        return DockerSandbox(docker_image)
    raise ValueError(f"unknown sandbox backend {backend!r}")


def default_work_dir() -> str:
    """A tmpfs when there is one (copies and removals are several times faster), else /tmp."""
    shm = "/dev/shm"
    if os.path.isdir(shm) and os.access(shm, os.W_OK | os.X_OK):
        return shm
    return tempfile.gettempdir()


def run_episode(
    *,
    task_id: str,
    model: str,
    sample: int,
    completion: str,
    scenario: Scenario,
    settings: EnvironmentSettings,
    sandbox: Sandbox | None = None,
) -> Episode:
    """Run one completion's program against a fresh copy of ``scenario`` and measure it.

    ``sandbox`` overrides the backend the settings name (the benchmark's floor uses it).
    """
    program = extract_program(completion)
    total = junk_bytes_total(scenario)
    if sandbox is None and program is not None:
        sandbox = make_sandbox(settings.backend, settings.interpreter, settings.docker_image)
    backend = sandbox.name if sandbox is not None else settings.backend
    if program is None:
        return Episode(
            task_id=task_id,
            model=model,
            sample=sample,
            code_found=False,
            exit_code=None,
            stopped_by=None,
            junk_bytes_total=total,
            junk_bytes_freed=0,
            new_bytes=0,
            protected_damaged=(),
            freed_share=0.0,
            success=False,
            seconds=0.0,
            stdout_tail="",
            stderr_tail="",
            scenario=scenario.name,
            backend=backend,
        )
    work_dir = settings.work_dir or default_work_dir()
    _sweep_once(work_dir)
    folder = Path(tempfile.mkdtemp(prefix=f"{EPISODE_PREFIX}{os.getpid()}-", dir=work_dir))
    try:
        clock = settings.clock if settings.clock is not None else time.time()
        materialise(scenario, folder / "root", clock, owner=sandbox.owner)
        (folder / "program.py").write_text(program, encoding="utf-8", errors="surrogatepass")
        result = sandbox.run(folder, limits_from(settings))
        found = measure(scenario, folder / "root")
    finally:
        _remove(folder)
    share = found.freed_share
    return Episode(
        task_id=task_id,
        model=model,
        sample=sample,
        code_found=True,
        exit_code=result.exit_code,
        stopped_by=result.stopped_by,
        junk_bytes_total=found.junk_bytes_total,
        junk_bytes_freed=found.junk_bytes_freed,
        new_bytes=found.new_bytes,
        protected_damaged=found.protected_damaged,
        freed_share=share,
        success=is_success(result.exit_code, share, found.protected_damaged),
        seconds=round(result.seconds, 3),
        stdout_tail=result.stdout_tail,
        stderr_tail=result.stderr_tail,
        scenario=scenario.name,
        backend=backend,
    )


def sweep_stale_episodes(work_dir: str) -> int:
    """Remove episode folders whose process is gone (killed mid-episode); return how many.

    On a tmpfs such leftovers hold RAM until the machine restarts.
    """
    removed = 0
    for entry in Path(work_dir).glob(f"{EPISODE_PREFIX}*"):
        pid = entry.name[len(EPISODE_PREFIX) :].split("-", 1)[0]
        if not pid.isdigit() or _alive(int(pid)):
            continue
        _remove(entry)
        removed += 1
    if removed:
        log.info("removed %d episode folders left by dead processes in %s", removed, work_dir)
    return removed


def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:  # another user's live process
        return True
    return True


@cache
def _sweep_once(work_dir: str) -> None:
    sweep_stale_episodes(work_dir)


def _remove(folder: Path) -> None:
    """Remove an episode folder, however the program left it (deep, unreadable, odd names)."""
    try:
        shutil.rmtree(folder)
    except (OSError, RecursionError) as exc:
        log.warning("rmtree %s failed (%s); removing with rm -rf", folder, exc)
        subprocess.run(["rm", "-rf", "--one-file-system", str(folder)], check=False, timeout=300)
