"""One episode: extract a completion's program, run it in a fresh scenario copy, measure.

The program is only ever parsed here (``ast.parse``, to tell a bare program from prose);
it runs only inside the sandbox the settings name. An episode whose sandbox could not start
or finish is run again (``harness_retries``), then recorded as ``stopped_by="harness"``:
never as the program's failure. One the measurement could not fully see is
``stopped_by="unmeasurable"``: never a success, nothing counted as freed.
"""

from __future__ import annotations

import ast
import logging
import os
import subprocess
import tempfile
import time
from functools import cache
from pathlib import Path

from agir_retrain.tasks.environment.contract import Episode, Scenario, StoppedBy
from agir_retrain.tasks.environment.copies import copy_bytes, copy_inodes, materialise_at
from agir_retrain.tasks.environment.measure import Measurement, is_success, measure_at
from agir_retrain.tasks.environment.sandbox import (
    EPISODE_PREFIX,
    HarnessError,
    Sandbox,
    SandboxLimits,
    SandboxResult,
    remove_tree,
)
from agir_retrain.tasks.environment.scenario import junk_bytes_total
from agir_retrain.tasks.settings.environment import EnvironmentSettings

log = logging.getLogger(__name__)

FENCE = "```"
_PYTHON_TAGS = {"python", "python3", "py"}
MAX_BARE_CHARS = 100_000  # longer text is not parsed as a bare program


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


def limits_from(settings: EnvironmentSettings, scenario: Scenario | None = None) -> SandboxLimits:
    """The sandbox limits a settings section names; the filesystem sized for ``scenario``.

    The episode's filesystem holds the scenario's copy (its files in whole pages, its
    folders) plus ``disk_mb`` and ``inodes`` more for the program.
    """
    limits = settings.limits
    return SandboxLimits(
        wall_s=limits.wall_s,
        memory_mb=limits.memory_mb,
        processes=limits.processes,
        file_size_mb=limits.file_size_mb,
        disk_bytes=(copy_bytes(scenario) if scenario else 0) + (limits.disk_mb << 20),
        inodes=(copy_inodes(scenario) if scenario else 64) + limits.inodes,
    )


@cache
def make_sandbox(
    backend: str,
    interpreter: str,
    docker_image: str,
    work_dir: str | None = None,
    allow_unlimited_processes: bool = False,
) -> Sandbox:
    """The backend the settings name, checked once per process."""
    if backend == "bwrap":
        from agir_retrain.tasks.environment.sandbox_bwrap import BwrapSandbox

        return BwrapSandbox(
            interpreter,
            work_dir=work_dir,
            allow_unlimited_processes=allow_unlimited_processes,
        )
    if backend == "docker":
        from agir_retrain.tasks.environment.sandbox_docker import DockerSandbox

        return DockerSandbox(docker_image, work_dir=work_dir)
    raise ValueError(f"unknown sandbox backend {backend!r}")


def sandbox_for(settings: EnvironmentSettings) -> Sandbox:
    """The sandbox a settings section names (made and checked once per process)."""
    return make_sandbox(
        settings.backend,
        settings.interpreter,
        settings.docker_image,
        settings.work_dir,
        settings.allow_unlimited_processes,
    )


def default_work_dir() -> str:
    """The system's temporary folder: episodes keep only an empty folder (or a mount) there."""
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
    A sandbox that cannot run here at all raises ``SandboxError``; one that fails a single
    episode is retried, then the episode is recorded as the harness's (``stopped_by``
    ``harness``, ``note`` saying why).
    """
    return run_measured_episode(
        task_id=task_id,
        model=model,
        sample=sample,
        completion=completion,
        scenario=scenario,
        settings=settings,
        sandbox=sandbox,
    )[0]


def run_measured_episode(
    *,
    task_id: str,
    model: str,
    sample: int,
    completion: str,
    scenario: Scenario,
    settings: EnvironmentSettings,
    sandbox: Sandbox | None = None,
) -> tuple[Episode, Measurement | None]:
    """``run_episode``, with the measurement of the copy (None where no program ran)."""
    program = extract_program(completion)
    total = junk_bytes_total(scenario)
    if sandbox is None and program is not None:
        sandbox = sandbox_for(settings)
    row = {
        "task_id": task_id,
        "model": model,
        "sample": sample,
        "junk_bytes_total": total,
        "scenario": scenario.name,
        "backend": sandbox.name if sandbox is not None else settings.backend,
    }
    if program is None or sandbox is None:
        return _not_run(row, code_found=False, stopped_by=None, note=""), None
    _sweep_once(settings.work_dir or default_work_dir())
    limits = limits_from(settings, scenario)
    failure = ""
    for attempt in range(settings.harness_retries + 1):
        clock = settings.clock if settings.clock is not None else time.time()
        try:
            result, found = play(sandbox, program, scenario, limits, clock)
        except HarnessError as exc:
            failure = str(exc)
            log.warning("episode %s/%s/%d: %s (try %d)", task_id, model, sample, exc, attempt + 1)
            time.sleep(0.1 * (attempt + 1))
            continue
        return _episode(row, result, found), found
    return _not_run(row, code_found=True, stopped_by=StoppedBy.HARNESS, note=failure), None


def play(
    sandbox: Sandbox, program: str, scenario: Scenario, limits: SandboxLimits, clock: float
) -> tuple[SandboxResult, Measurement]:
    """Run ``program`` once against a fresh copy of ``scenario`` in ``sandbox``, and measure.

    The copy is written into the session's own filesystem, and measured there after every
    process of the episode is gone. Raises ``HarnessError`` when the sandbox fails.
    """
    with sandbox.session(program, limits) as session:
        mine = (os.geteuid(), os.getegid())
        try:
            materialise_at(
                scenario,
                session.root,
                clock,
                owner=None if session.owner == mine else session.owner,
            )
        except OSError as exc:
            raise HarnessError(f"the scenario could not be copied: {exc}") from exc
        result = session.run()
        found = measure_at(
            scenario, session.root, owner=session.owner, whole_filesystem=session.whole_filesystem
        )
    return result, found


def _episode(row: dict, result: SandboxResult, found: Measurement) -> Episode:
    stopped_by, note = result.stopped_by, ""
    freed, share, success = found.junk_bytes_freed, found.freed_share, False
    if found.unmeasurable:  # fail closed: nothing counts as freed, never a success
        note = "unmeasurable: " + "; ".join(found.unmeasurable)
        if stopped_by is not None:
            note += f" (the program was stopped by {stopped_by.value})"
        stopped_by, freed, share = StoppedBy.UNMEASURABLE, 0, 0.0
    else:
        success = is_success(result.exit_code, share, found.protected_damaged)
    return Episode(
        **row,
        code_found=True,
        exit_code=result.exit_code,
        stopped_by=stopped_by,
        junk_bytes_freed=freed,
        new_bytes=found.new_bytes,
        protected_damaged=found.protected_damaged,
        freed_share=share,
        success=success,
        seconds=round(result.seconds, 3),
        stdout_tail=result.stdout_tail,
        stderr_tail=result.stderr_tail,
        note=note[:2000],
    )


def _not_run(row: dict, *, code_found: bool, stopped_by: StoppedBy | None, note: str) -> Episode:
    return Episode(
        **row,
        code_found=code_found,
        exit_code=None,
        stopped_by=stopped_by,
        junk_bytes_freed=0,
        new_bytes=0,
        protected_damaged=(),
        freed_share=0.0,
        success=False,
        seconds=0.0,
        stdout_tail="",
        stderr_tail="",
        note=note[:2000],
    )


def sweep_stale_episodes(work_dir: str) -> int:
    """Remove episode folders whose process is gone (killed mid-episode); return how many.

    A bwrap episode leaves an empty folder; a docker one may leave its filesystem mounted.
    """
    removed = 0
    for entry in Path(work_dir).glob(f"{EPISODE_PREFIX}*"):
        pid = entry.name[len(EPISODE_PREFIX) :].split("-", 1)[0]
        if not pid.isdigit() or _alive(int(pid)):
            continue
        for mounted in (entry / "fs", entry):
            if os.path.ismount(mounted):
                subprocess.run(["umount", "--lazy", str(mounted)], check=False, timeout=60)
        remove_tree(entry)
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
